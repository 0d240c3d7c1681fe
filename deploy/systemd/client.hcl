# /etc/tribune.d/client.hcl: every machine that is not a server.
# The gossip key lives in /etc/tribune.d/gossip.hcl (see tribune.service).
datacenter = "dc1"
data_dir   = "/var/lib/tribune"

retry_join     = ["tribune-1.example.internal", "tribune-2.example.internal", "tribune-3.example.internal"]
retry_interval = "5s"

# Local applications reach the agent on loopback (HTTP 8500, DNS 8600,
# gRPC 8502).
client_addr = "127.0.0.1"

leave_on_terminate = true

log_level = "info"

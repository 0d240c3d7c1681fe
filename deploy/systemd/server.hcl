# /etc/tribune.d/server.hcl: one of three (or five) server machines.
# The gossip key lives in /etc/tribune.d/gossip.hcl (see tribune.service).
datacenter       = "dc1"
data_dir         = "/var/lib/tribune"
server           = true
bootstrap_expect = 3

# Every server machine, this one included: the file is the same on all.
retry_join     = ["tribune-1.example.internal", "tribune-2.example.internal", "tribune-3.example.internal"]
retry_interval = "5s"

# Only loopback for the HTTP API, DNS and gRPC; gossip and RPC bind to the
# machine's private address (chosen automatically when it has exactly one;
# set bind_addr otherwise).
client_addr = "127.0.0.1"

leave_on_terminate      = false
skip_leave_on_interrupt = true

ui_config {
  enabled = true
}

performance {
  raft_multiplier = 1
}

autopilot {
  cleanup_dead_servers = true
}

log_level = "info"

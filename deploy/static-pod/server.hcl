# /etc/tribune/server.hcl on every control-plane node (static pod servers).
# Put the gossip key beside it, readable by uid 100 only:
#   echo "encrypt = \"$(tribune keygen)\"" > /etc/tribune/gossip.hcl
#   chown 100:1000 /etc/tribune/gossip.hcl && chmod 0400 /etc/tribune/gossip.hcl
# and the data directory, owned by the container user:
#   install -d -o 100 -g 1000 -m 0700 /var/lib/tribune
datacenter         = "dc1"
primary_datacenter = "dc1"
server             = true
bootstrap_expect   = 3

leave_on_terminate      = false
skip_leave_on_interrupt = true

retry_interval = "5s"

ports {
  http     = 8500
  grpc     = 8502
  dns      = 8600
  server   = 8300
  serf_lan = 8301
  serf_wan = 8302
}

performance {
  raft_multiplier = 1
}

autopilot {
  cleanup_dead_servers = true
}

log_level = "info"

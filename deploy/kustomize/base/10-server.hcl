# Server agents (StatefulSet tribune-server). Loaded from the ConfigMap
# tribune-server-config mounted at /consul/config. The gossip key comes from
# the Secret tribune-gossip-key through -encrypt; the node name, addresses and
# retry_join come from the pod (see the StatefulSet's args). The datacenter
# name and bootstrap_expect are set per datacenter by the overlay's
# 20-datacenter.hcl, loaded after this file (files load in lexical order).
server           = true
bootstrap_expect = 3 # = the StatefulSet's replicas

# A server that leaves on SIGTERM shrinks the Raft quorum; a rolling restart
# must not do that. Servers stay members while their pod restarts.
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

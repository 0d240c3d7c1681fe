# Client agents (DaemonSet tribune-client), one per node. Loaded from the
# ConfigMap tribune-client-config mounted at /consul/config. The gossip key
# (encrypt) and the agent token (acl.tokens.agent) come from Secrets through
# the DaemonSet's args; the node name and addresses come from the pod. The
# datacenter name is set by the overlay's 20-datacenter.hcl.
# A client that goes away for good (node drained, DaemonSet rolled) leaves
# the cluster instead of lingering as failed for reconnect_timeout.
leave_on_terminate = true

retry_interval = "5s"

ports {
  http     = 8500
  grpc     = 8502
  dns      = 8600
  serf_lan = 8301
}

acl {
  enabled                  = false
  default_policy           = "allow"
  down_policy              = "extend-cache"
  enable_token_persistence = false
}

log_level = "info"

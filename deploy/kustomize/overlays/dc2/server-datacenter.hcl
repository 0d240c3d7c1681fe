# dc2 is a secondary datacenter. bootstrap_expect must equal the
# StatefulSet's replicas (5, set in kustomization.yaml).
datacenter         = "dc2"
primary_datacenter = "dc1"
bootstrap_expect   = 5

# dc1's servers, reachable from this cluster on their WAN port 8302 (a flat
# pod network between the clusters, or a LoadBalancer in front of dc1's
# servers): replace with the name that resolves to them from here.
retry_join_wan = ["tribune-server-wan.dc1.example.internal"]

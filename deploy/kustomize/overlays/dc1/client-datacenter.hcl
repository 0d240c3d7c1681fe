datacenter         = "dc1"
primary_datacenter = "dc1"

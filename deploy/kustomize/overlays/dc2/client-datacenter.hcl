datacenter         = "dc2"
primary_datacenter = "dc1"

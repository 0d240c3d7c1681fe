# dc1 is the primary datacenter: ACLs, intentions, config entries and CA
# roots are written here and replicated to the others.
datacenter         = "dc1"
primary_datacenter = "dc1"
bootstrap_expect   = 3

package acl

import "testing"

func TestAllowAllAllows(t *testing.T) {
	a, err := StaticResolver{Authorizer: AllowAll()}.Resolve("anything")
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyWrite("k") != Allow || a.ServiceRead("s") != Allow || a.OperatorWrite() != Allow {
		t.Fatal("allow-all authorizer denied an action")
	}
}

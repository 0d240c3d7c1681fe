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

func TestDenyAllDenies(t *testing.T) {
	a := DenyAll()
	for name, d := range map[string]Decision{
		"KeyRead": a.KeyRead("k"), "KeyWrite": a.KeyWrite("k"), "KeyList": a.KeyList("k"),
		"NodeRead": a.NodeRead("n"), "NodeWrite": a.NodeWrite("n"),
		"ServiceRead": a.ServiceRead("s"), "ServiceWrite": a.ServiceWrite("s"),
		"SessionRead": a.SessionRead("n"), "SessionWrite": a.SessionWrite("n"),
		"AgentRead": a.AgentRead("n"), "AgentWrite": a.AgentWrite("n"),
		"OperatorRead": a.OperatorRead(), "OperatorWrite": a.OperatorWrite(),
		"EventWrite": a.EventWrite("e"), "QueryWrite": a.QueryWrite("q"),
	} {
		if d != Deny {
			t.Errorf("deny-all authorizer allowed %s", name)
		}
	}
}

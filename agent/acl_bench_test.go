package agent_test

import (
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
)

// BenchmarkKVWithACLs compares KV writes and reads through one dev agent
// with ACLs off and with default_policy=deny and a token allowed on the
// key: the cost of resolution and authorization (target: within 10%).
func BenchmarkKVWithACLs(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "acl=off"
		if on {
			name = "acl=on"
		}
		b.Run(name, func(b *testing.B) {
			c := agenttest.Config(b)
			secret := ""
			if on {
				aclConfig(c)
			}
			a := agenttest.Start(b, c)
			if on {
				root := tokenClient(b, a, rootSecret)
				waitManagement(b, root)
				if _, _, err := root.ACL().PolicyCreate(&api.ACLPolicy{Name: "bench", Rules: `key_prefix "bench/" { policy = "write" }`}, nil); err != nil {
					b.Fatal(err)
				}
				tok, _, err := root.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{Name: "bench"}}}, nil)
				if err != nil {
					b.Fatal(err)
				}
				secret = tok.SecretID
			}
			kv := tokenClient(b, a, secret).KV()
			pair := &api.KVPair{Key: "bench/k", Value: []byte("v")}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := kv.Put(pair, nil); err != nil {
					b.Fatal(err)
				}
				if _, _, err := kv.Get("bench/k", nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package agent_test

import (
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/tribune-mesh/tribune/agent/agenttest"
)

func TestTxnCatalogOperations(t *testing.T) {
	a := agenttest.Start(t, nil)
	c := apiClient(t, a)
	ops := api.TxnOps{
		&api.TxnOp{Node: &api.NodeTxnOp{Verb: api.NodeSet, Node: api.Node{Node: "tx-node", Address: "10.1.1.1"}}},
		&api.TxnOp{Service: &api.ServiceTxnOp{Verb: api.ServiceSet, Node: "tx-node", Service: api.AgentService{ID: "tx-svc", Service: "tx", Port: 9}}},
		&api.TxnOp{Check: &api.CheckTxnOp{Verb: api.CheckSet, Check: api.HealthCheck{Node: "tx-node", CheckID: "tx-check", Name: "c", Status: api.HealthPassing, ServiceID: "tx-svc"}}},
		&api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "tx/key", Value: []byte("v")}},
	}
	ok, resp, _, err := c.Txn().Txn(ops, nil)
	if err != nil || !ok {
		t.Fatalf("txn: ok=%v err=%v resp=%+v", ok, err, resp)
	}
	if len(resp.Results) != 4 || resp.Results[0].Node == nil || resp.Results[1].Service == nil || resp.Results[2].Check == nil {
		t.Fatalf("results %+v", resp.Results)
	}
	entries, _, err := c.Health().Service("tx", "", true, nil)
	if err != nil || len(entries) != 1 || entries[0].Node.Address != "10.1.1.1" {
		t.Fatalf("health of tx: %v %v", entries, err)
	}
	// A stale node cas fails the whole transaction: the KV write beside it
	// is not applied.
	ops = api.TxnOps{
		&api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "tx/other", Value: []byte("x")}},
		&api.TxnOp{Node: &api.NodeTxnOp{Verb: api.NodeCAS, Node: api.Node{Node: "tx-node", Address: "10.2.2.2", ModifyIndex: 1}}},
	}
	ok, resp, _, err = c.Txn().Txn(ops, nil)
	if err != nil || ok || len(resp.Errors) != 1 || resp.Errors[0].OpIndex != 1 {
		t.Fatalf("stale cas txn: ok=%v err=%v resp=%+v", ok, err, resp)
	}
	if p, _, _ := c.KV().Get("tx/other", nil); p != nil {
		t.Fatal("rolled-back txn wrote its KV op")
	}
	// Deleting the service removes its check too.
	ops = api.TxnOps{&api.TxnOp{Service: &api.ServiceTxnOp{Verb: api.ServiceDelete, Node: "tx-node", Service: api.AgentService{ID: "tx-svc"}}}}
	if ok, resp, _, err = c.Txn().Txn(ops, nil); err != nil || !ok {
		t.Fatalf("delete service: %v %+v", err, resp)
	}
	checks, _, _ := c.Health().Node("tx-node", nil)
	if len(checks) != 0 {
		t.Fatalf("checks left after service delete: %v", checks)
	}
}

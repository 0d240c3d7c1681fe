package server

import (
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// After Raft's decoder stops reading answers (as it does on a follower's
// Success=false), Raft's sender keeps sending until it notices and closes
// the pipeline: every send returns, and Close does too. On hashicorp/raft's
// own pipeline the third send blocks for good (hashicorp/raft#612).
func TestPipelineSendsAfterDecoderStops(t *testing.T) {
	follower, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer follower.Close()
	// The follower rejects every append, as one whose log does not match.
	go func() {
		for rpc := range follower.Consumer() {
			rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: false}, nil)
		}
	}()
	leaderNet, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer leaderNet.Close()
	stop := make(chan struct{})
	stopped := make(chan struct{})
	leader := newObservedTransport(leaderNet, func(raft.RPC) {}, stop, func() { close(stopped) })
	defer func() { close(stop); <-stopped }()

	p, err := leader.AppendEntriesPipeline("f", follower.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	send := func() error {
		_, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax}, Term: 1}, &raft.AppendEntriesResponse{})
		return err
	}
	if err := send(); err != nil {
		t.Fatal(err)
	}
	// Raft's decoder reads the rejection and returns.
	select {
	case f := <-p.Consumer():
		if err := f.Error(); err != nil || f.Response().Success {
			t.Fatalf("first answer: %+v %v, want a rejection", f.Response(), err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to the first append")
	}
	// Its sender goes on for a while: each send must return.
	for i := range 10 {
		done := make(chan error, 1)
		go func() { done <- send() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("send %d: %v", i+2, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("send %d blocked with no one reading answers", i+2)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked")
	}
}

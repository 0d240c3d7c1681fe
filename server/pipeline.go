package server

import (
	"sync"

	"github.com/hashicorp/raft"
)

// maxPipelineBacklog bounds the answers a pipeline holds for Raft before it
// stops taking more from the transport (the transport's own backpressure
// then applies, as without this wrapper).
const maxPipelineBacklog = 4096

// AppendEntriesPipeline implements raft.Transport: hashicorp/raft's
// pipeline, whose answers are taken from the transport as they come and
// held until Raft reads them.
//
// In hashicorp/raft v1.7.3 the pipeline can wedge for good: when a
// follower answers an append with Success=false, Raft's decoder stops
// reading answers, the transport's decoder then waits to hand over the next
// one, and Raft's sender, already inside AppendEntries, waits for the
// transport to take its request (both channels are unbuffered at the
// default MaxRPCsInFlight). The leader never sends that follower another
// entry, and never finishes Shutdown (hashicorp/raft#612). Draining the
// answers here keeps the sender moving until it sees the decoder is gone
// and closes the pipeline, with pipelining (and its latency) unchanged.
func (t *observedTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	inner, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return newDrainedPipeline(inner), nil
}

// drainedPipeline is an AppendPipeline whose answers are drained from the
// inner pipeline into a backlog that Consumer serves.
type drainedPipeline struct {
	inner raft.AppendPipeline
	out   chan raft.AppendFuture
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

func newDrainedPipeline(inner raft.AppendPipeline) *drainedPipeline {
	p := &drainedPipeline{inner: inner, out: make(chan raft.AppendFuture), stop: make(chan struct{}), done: make(chan struct{})}
	go p.drain()
	return p
}

// drain moves answers from the inner pipeline to the backlog and from the
// backlog to Consumer, until Close.
func (p *drainedPipeline) drain() {
	defer close(p.done)
	var backlog []raft.AppendFuture
	for {
		in := p.inner.Consumer()
		if len(backlog) >= maxPipelineBacklog {
			in = nil
		}
		var out chan raft.AppendFuture
		var next raft.AppendFuture
		if len(backlog) > 0 {
			out, next = p.out, backlog[0]
		}
		select {
		case f := <-in:
			backlog = append(backlog, f)
		case out <- next:
			backlog[0] = nil
			backlog = backlog[1:]
		case <-p.stop:
			return
		}
	}
}

// AppendEntries implements raft.AppendPipeline.
func (p *drainedPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	return p.inner.AppendEntries(args, resp)
}

// Consumer implements raft.AppendPipeline.
func (p *drainedPipeline) Consumer() <-chan raft.AppendFuture { return p.out }

// Close implements raft.AppendPipeline: the inner pipeline first (its
// goroutines end), then the drain.
func (p *drainedPipeline) Close() error {
	err := p.inner.Close()
	p.once.Do(func() { close(p.stop) })
	<-p.done
	return err
}

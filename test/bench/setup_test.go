package bench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

const (
	kindTribune = "tribune"
	kindConsul  = "consul"
)

// consulPath is the reference binary, "" when none is on PATH.
var consulPath = func() string {
	p, err := exec.LookPath("consul")
	if err != nil {
		return ""
	}
	return p
}()

// kinds lists the implementations the -dev workloads run against.
func kinds() []string {
	if consulPath == "" {
		return []string{kindTribune}
	}
	return []string{kindTribune, kindConsul}
}

var devSeq struct {
	sync.Mutex
	n int
}

// startDev starts `<kind> agent -dev` on free ports, waits until it leads,
// and kills it when the benchmark ends.
func startDev(b *testing.B, kind string, extra ...string) *proc {
	b.Helper()
	p, _ := startDevPorts(b, kind, extra...)
	return p
}

// startDevPorts is startDev that also returns the agent's ports.
func startDevPorts(b *testing.B, kind string, extra ...string) (*proc, ports) {
	b.Helper()
	bin := consulPath
	if kind == kindTribune {
		bin = tribuneBin(b)
	}
	pp := newPorts(b)
	args := append([]string{"agent", "-dev", "-node", "n1", "-bind", "127.0.0.1", "-client", "127.0.0.1"}, pp.flags()...)
	args = append(args, extra...)
	devSeq.Lock()
	devSeq.n++
	name := fmt.Sprintf("%s-dev-%d", kind, devSeq.n)
	devSeq.Unlock()
	p := newProc(name, bin, pp, args)
	launchReady(b, p)
	return p, pp
}

// launchReady starts p, killed when the benchmark ends, and waits until it
// has a leader.
func launchReady(b *testing.B, p *proc) {
	b.Helper()
	if err := p.Launch(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Kill)
	if err := p.WaitReady(context.Background(), 1, 60*time.Second); err != nil {
		p.Kill()
		b.Fatal(err)
	}
}

// cluster is three tribune servers and one client agent.
type cluster struct {
	servers []*proc
	client  *proc
}

var (
	clusterOnce sync.Once
	theCluster  *cluster
	clusterErr  error
)

// getCluster starts the shared 3-server + client cluster on first use; it
// lives until TestMain kills every process.
func getCluster(b *testing.B) *cluster {
	b.Helper()
	bin := tribuneBin(b)
	clusterOnce.Do(func() {
		start := time.Now()
		theCluster, clusterErr = startCluster(b, bin, "", clusterExtra()...)
		if clusterErr == nil {
			fmt.Printf("bench: cluster of 3 servers + 1 client ready in %s\n", time.Since(start).Round(time.Millisecond))
		}
	})
	if clusterErr != nil {
		b.Fatal(clusterErr)
	}
	return theCluster
}

// startCluster starts three servers and a client agent; prefix names
// their processes and data directories (so that two clusters can run in
// one benchmark run), extra is added to every agent's arguments.
func startCluster(tb testing.TB, bin, prefix string, extra ...string) (*cluster, error) {
	return startClusterSpec(tb, bin, prefix, func(string, bool) []string { return extra })
}

// startClusterSpec starts 3 servers and a client whose names and data
// directories start with prefix; extra, when set, adds arguments to each
// agent's command line.
func startClusterSpec(tb testing.TB, bin, prefix string, extra func(name string, server bool) []string) (*cluster, error) {
	if extra == nil {
		extra = func(string, bool) []string { return nil }
	}
	var sp [3]ports
	for i := range sp {
		sp[i] = newPorts(tb)
	}
	join := func(skip int) []string {
		var out []string
		for i := range sp {
			if i != skip {
				out = append(out, "-retry-join", "127.0.0.1:"+strconv.Itoa(sp[i].SerfLAN))
			}
		}
		return append(out, "-retry-interval", "1s")
	}
	c := &cluster{}
	for i := range sp {
		name := fmt.Sprintf("%ss%d", prefix, i+1)
		args := []string{"agent", "-server", "-bootstrap-expect=3", "-node", name,
			"-bind", "127.0.0.1", "-client", "127.0.0.1", "-data-dir", filepath.Join(workDir, name+"-data")}
		args = append(args, sp[i].flags()...)
		args = append(args, join(i)...)
		args = append(args, extra(name, true)...)
		c.servers = append(c.servers, newProc(name, bin, sp[i], args))
	}
	cp := newPorts(tb)
	args := []string{"agent", "-node", prefix + "c1", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-data-dir", filepath.Join(workDir, prefix+"c1-data")}
	args = append(args, cp.flags()...)
	args = append(args, join(-1)...)
	args = append(args, extra(prefix+"c1", false)...)
	c.client = newProc(prefix+"c1", bin, cp, args)

	for _, p := range c.all() {
		p.Supervise = true
		if err := p.Launch(); err != nil {
			return nil, err
		}
	}
	for _, p := range c.all() {
		if err := p.WaitReady(context.Background(), 3, 90*time.Second); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// serverFor returns the server whose RPC address is addr.
func (c *cluster) serverFor(addr string) *proc {
	for _, s := range c.servers {
		if s.RPCAddr() == addr {
			return s
		}
	}
	return nil
}

func (c *cluster) all() []*proc { return append(append([]*proc{}, c.servers...), c.client) }

package servertest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
	"github.com/tribune-mesh/tribune/server"
	"github.com/tribune-mesh/tribune/server/servertest"
	"github.com/tribune-mesh/tribune/test/wait"
)

// TestScripts runs the scenarios of testdata/*.txt: one command a line,
// "#" starts a comment. Servers are named s0, s1, ...; "leader" is the
// current leader and "followers" the others; a name bound with "as" (e.g.
// "leader as old") keeps naming that server.
//
//	cluster N                      start N servers and form them
//	bind SERVERS as NAME           name servers for later lines
//	partition A,B | C,...          cut every link between the groups
//	cut-oneway FROM TO             hold what FROM sends to TO
//	heal                           restore every link
//	stop SERVER / restart SERVER [wipe]
//	wait-leader [among A,B]        one leader (among those) that all follow
//	wait-replication               every running server has the leader's log
//	put SERVER KEY VALUE           write through SERVER: must succeed
//	put-until SERVER KEY VALUE     write through SERVER until it succeeds
//	put-fails SERVER KEY VALUE     write through SERVER: must fail
//	get SERVER KEY VALUE|-         local (stale) read on SERVER: must match
//	not-leader SERVER              SERVER must step down within 5s
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScript(t, f) })
	}
}

type scriptRun struct {
	t     *testing.T
	c     *servertest.Cluster
	names map[string][]*servertest.Server
}

func runScript(t *testing.T, path string) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := &scriptRun{t: t, names: map[string][]*servertest.Server{}}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if i := strings.Index(text, "#"); i >= 0 {
			text = strings.TrimSpace(text[:i])
		}
		if text == "" {
			continue
		}
		if err := r.do(strings.Fields(text)); err != nil {
			t.Fatalf("%s:%d: %s: %v", path, line, text, err)
		}
	}
}

// servers resolves a comma-separated list of names.
func (r *scriptRun) servers(list string) ([]*servertest.Server, error) {
	var out []*servertest.Server
	for _, name := range strings.Split(list, ",") {
		switch {
		case name == "leader":
			l := r.c.Leader()
			if l == nil {
				return nil, errors.New("no leader")
			}
			out = append(out, l)
		case name == "followers":
			out = append(out, r.c.Followers()...)
		case name == "follower":
			f := r.c.Followers()
			if len(f) == 0 {
				return nil, errors.New("no follower")
			}
			out = append(out, f[0])
		case r.names[name] != nil:
			out = append(out, r.names[name]...)
		case strings.HasPrefix(name, "s"):
			i, err := strconv.Atoi(name[1:])
			if err != nil || i < 0 || i >= len(r.c.Servers) {
				return nil, fmt.Errorf("no server %q", name)
			}
			out = append(out, r.c.Servers[i])
		default:
			return nil, fmt.Errorf("no server %q", name)
		}
	}
	return out, nil
}

func (r *scriptRun) server(name string) (*servertest.Server, error) {
	s, err := r.servers(name)
	if err != nil {
		return nil, err
	}
	if len(s) != 1 {
		return nil, fmt.Errorf("%q names %d servers", name, len(s))
	}
	return s[0], nil
}

func (r *scriptRun) do(args []string) error {
	t := r.t
	need := func(n int) error {
		if len(args) < n {
			return fmt.Errorf("want %d arguments", n-1)
		}
		return nil
	}
	if args[0] != "cluster" && r.c == nil {
		return errors.New("no cluster yet")
	}
	switch args[0] {
	case "cluster":
		if err := need(2); err != nil {
			return err
		}
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		r.c = servertest.New(t, servertest.Options{Servers: n, Configure: func(_ int, cfg *server.Config) {
			cfg.HoldTimeout = 2 * time.Second
		}})
	case "bind":
		if err := need(4); err != nil {
			return err
		}
		s, err := r.servers(args[1])
		if err != nil {
			return err
		}
		r.names[args[3]] = s
	case "partition":
		var groups [][]*servertest.Server
		for _, g := range strings.Split(strings.Join(args[1:], ""), "|") {
			s, err := r.servers(g)
			if err != nil {
				return err
			}
			groups = append(groups, s)
		}
		r.c.Partition(groups...)
	case "cut-oneway":
		if err := need(3); err != nil {
			return err
		}
		from, err := r.server(args[1])
		if err != nil {
			return err
		}
		to, err := r.server(args[2])
		if err != nil {
			return err
		}
		r.c.Net.CutOneWay(from.Addr, to.Addr)
	case "heal":
		r.c.Heal()
	case "stop", "restart":
		if err := need(2); err != nil {
			return err
		}
		s, err := r.server(args[1])
		if err != nil {
			return err
		}
		if args[0] == "stop" {
			r.c.Stop(s)
		} else {
			r.c.Restart(s, len(args) > 2 && args[2] == "wipe")
		}
	case "wait-leader":
		var among []*servertest.Server
		if len(args) == 3 && args[1] == "among" {
			var err error
			if among, err = r.servers(args[2]); err != nil {
				return err
			}
		}
		r.c.WaitForLeaderAmong(servertest.DefaultTimeout, among)
	case "wait-replication":
		r.c.WaitForReplication(servertest.DefaultTimeout)
	case "put-until":
		if err := need(4); err != nil {
			return err
		}
		wait.For(t, servertest.DefaultTimeout, func() error { return r.do(append([]string{"put"}, args[1:]...)) })
	case "put", "put-fails":
		if err := need(4); err != nil {
			return err
		}
		s, err := r.server(args[1])
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := s.Apply(ctx, catalog.CmdKV, &catalog.KVRequest{Op: catalog.KVSet, Entry: catalog.KVEntry{Key: args[2], Value: []byte(args[3])}})
		if kv, ok := res.(catalog.KVResult); err == nil && (!ok || !kv.OK) {
			err = fmt.Errorf("result %+v", res)
		}
		if args[0] == "put" && err != nil {
			return err
		}
		if args[0] == "put-fails" && err == nil {
			return errors.New("the write succeeded")
		}
	case "get":
		if err := need(4); err != nil {
			return err
		}
		s, err := r.server(args[1])
		if err != nil {
			return err
		}
		_, e, err := s.Store().KVGet(nil, args[2])
		if err != nil {
			return err
		}
		got := "-"
		if e != nil {
			got = string(e.Value)
		}
		if got != args[3] {
			return fmt.Errorf("%s = %q, want %q", args[2], got, args[3])
		}
	case "not-leader":
		if err := need(2); err != nil {
			return err
		}
		s, err := r.server(args[1])
		if err != nil {
			return err
		}
		wait.For(t, 5*time.Second, func() error {
			if s.IsLeader() {
				return fmt.Errorf("%s still leads", s.Name)
			}
			return nil
		})
	default:
		return fmt.Errorf("unknown command %q", args[0])
	}
	return nil
}

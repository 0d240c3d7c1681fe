package redirect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Runner runs one iptables command with the given arguments (without the
// program name), blocking until it ends or ctx does. When the command ran
// and exited non-zero it returns a *CommandError with the exit status:
// Apply reads status 1 of -N as "the chain exists" and of -C as "the rule
// is missing". Apply calls it from one goroutine at a time.
type Runner interface {
	Run(ctx context.Context, args []string) error
}

// CommandError is an iptables command that ran and failed.
type CommandError struct {
	// Args are the command's arguments.
	Args []string
	// ExitCode is its exit status: 1 for "no such chain or rule" and
	// "chain already exists" among others, 2 for bad arguments, 4 for a
	// permission or resource problem.
	ExitCode int
	// Output is what it printed, trimmed.
	Output string
	// Err is the underlying error (an *exec.ExitError for IPTables).
	Err error
}

// Error says which command failed, how, and what it printed.
func (e *CommandError) Error() string {
	msg := fmt.Sprintf("iptables %s: exit status %d", strings.Join(e.Args, " "), e.ExitCode)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

// Unwrap returns the underlying error.
func (e *CommandError) Unwrap() error { return e.Err }

// exitedWith1 reports whether err is a command that ran and exited with
// status 1: what iptables answers for a chain that already exists (-N) and
// for a rule that is not there (-C).
func exitedWith1(err error) bool {
	var ce *CommandError
	return errors.As(err, &ce) && ce.ExitCode == 1
}

// Apply makes the host's nat table hold p: each chain of p is created, or
// emptied when it exists already; p's rules are appended to them; each jump
// is appended to its built-in chain unless an identical one is there. Run
// twice with one Plan, it leaves the table as the first run did; run with
// another Plan, it replaces the first one's rules.
func Apply(ctx context.Context, r Runner, p Plan) error {
	for _, chain := range p.Chains {
		err := r.Run(ctx, []string{"-t", "nat", "-N", chain})
		if err == nil {
			continue
		}
		if !exitedWith1(err) {
			return fmt.Errorf("create chain %s: %w", chain, err)
		}
		// Most likely there from an earlier run: empty it.
		if ferr := r.Run(ctx, []string{"-t", "nat", "-F", chain}); ferr != nil {
			return fmt.Errorf("create or flush chain %s: %w (creating it: %v)", chain, ferr, err)
		}
	}
	for _, rule := range p.Rules {
		if err := r.Run(ctx, rule.Args("-A")); err != nil {
			return fmt.Errorf("add rule to %s: %w", rule.Chain, err)
		}
	}
	for _, jump := range p.Jumps {
		err := r.Run(ctx, jump.Args("-C"))
		if err == nil {
			continue
		}
		if !exitedWith1(err) {
			return fmt.Errorf("look for the jump from %s: %w", jump.Chain, err)
		}
		if err := r.Run(ctx, jump.Args("-A")); err != nil {
			return fmt.Errorf("add jump from %s: %w", jump.Chain, err)
		}
	}
	return nil
}

// lockWaitSeconds is how long an iptables command waits for the xtables
// lock another program (kube-proxy, docker) may hold, rather than failing.
const lockWaitSeconds = 10

// IPTables runs the iptables program, optionally inside another network
// namespace.
type IPTables struct {
	// Path is the iptables program.
	Path string
	// NetNS, when set, is the path of the network namespace whose rules
	// the commands change (such as /var/run/netns/NAME or
	// /proc/PID/ns/net); Linux only.
	NetNS string
}

// NewIPTables finds iptables on PATH and checks that netns, when set, can be
// opened.
func NewIPTables(netns string) (*IPTables, error) {
	path, err := exec.LookPath("iptables")
	if err != nil {
		return nil, fmt.Errorf("iptables is required to redirect traffic (Debian package iptables): %w", err)
	}
	if netns != "" {
		f, err := os.Open(netns)
		if err != nil {
			return nil, fmt.Errorf("network namespace: %w", err)
		}
		f.Close()
	}
	return &IPTables{Path: path, NetNS: netns}, nil
}

// Run runs iptables with args, waiting for the xtables lock if need be.
func (x *IPTables) Run(ctx context.Context, args []string) error {
	if x.NetNS == "" {
		return x.run(ctx, args)
	}
	return InNetNS(x.NetNS, func() error { return x.run(ctx, args) })
}

func (x *IPTables) run(ctx context.Context, args []string) error {
	full := append([]string{"-w", strconv.Itoa(lockWaitSeconds)}, args...)
	cmd := exec.CommandContext(ctx, x.Path, full...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("iptables %s: %w", strings.Join(args, " "), ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &CommandError{Args: args, ExitCode: ee.ExitCode(), Output: strings.TrimSpace(out.String()), Err: err}
	}
	return fmt.Errorf("run %s: %w", x.Path, err)
}

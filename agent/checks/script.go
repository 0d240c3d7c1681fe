package checks

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"
)

// scriptWaitDelay bounds how long a script's output pipes may stay open
// after it was killed or exited (held by a child that escaped its process
// group) before they are closed and the probe returns.
const scriptWaitDelay = time.Second

type scriptProber struct {
	args      []string
	timeout   time.Duration
	maxOutput int
}

func (p *scriptProber) probe(ctx context.Context) (string, string) {
	out := &cappedBuffer{max: p.maxOutput}
	cmd := exec.CommandContext(ctx, p.args[0], p.args[1:]...)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = scriptWaitDelay
	killGroupOnCancel(cmd)
	err := cmd.Run()

	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		output := fmt.Sprintf("Timed out (%s) running check", p.timeout)
		if s := out.String(); s != "" {
			output += "\n" + s
		}
		return StatusCritical, output
	}
	if cmd.ProcessState == nil {
		// It never ran: not found, not executable, ...
		return StatusCritical, fmt.Sprintf("Failed to run check %q: %v", p.args[0], err)
	}
	output := out.String()
	switch code := cmd.ProcessState.ExitCode(); code {
	case 0:
		return StatusPassing, output
	case 1:
		return StatusWarning, output
	case -1:
		// Killed by a signal from outside the agent.
		return StatusCritical, output + "\n" + cmd.ProcessState.String()
	default:
		return StatusCritical, output
	}
}

//go:build unix

package checks

import (
	"os/exec"
	"syscall"
)

// killGroupOnCancel runs the script in its own process group and makes a
// cancelled or timed-out probe kill the whole group, so a shell's children
// (the sleep in `sh -c 'sleep 60'`) die with it instead of outliving it.
func killGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

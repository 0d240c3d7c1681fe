//go:build !unix

package checks

import "os/exec"

// killGroupOnCancel keeps exec's default on systems without process groups:
// a cancelled or timed-out probe kills the script process itself.
func killGroupOnCancel(*exec.Cmd) {}

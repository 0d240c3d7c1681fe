//go:build unix

package main

import (
	"os"
	"syscall"
)

// childSysProcAttr puts the lock's child in a process group of its own.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// signalChild sends sig to the child, or to its whole process group when
// group is set.
func signalChild(p *os.Process, sig syscall.Signal, group bool) error {
	if group {
		return syscall.Kill(-p.Pid, sig)
	}
	return p.Signal(sig)
}

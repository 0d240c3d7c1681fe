package fault

import (
	"fmt"
	"strings"
	"sync"
)

// chain is the iptables chain of the namespace's INPUT chain that holds the
// current partition. Every packet between agents crosses INPUT of lo.
const chain = "JEPSEN"

// Network cuts links between agents with iptables rules inside the
// namespace. It is safe for concurrent use.
type Network struct {
	// mu guards cuts and serialises iptables calls.
	mu   sync.Mutex
	cuts []string // "from->to", as applied
}

// Init creates the chain (empty) and hooks it into INPUT.
func (n *Network) Init() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	_ = runCmd("iptables", "-w", "-N", chain)
	if err := runCmd("iptables", "-w", "-F", chain); err != nil {
		return err
	}
	if runCmd("iptables", "-w", "-C", "INPUT", "-j", chain) != nil {
		if err := runCmd("iptables", "-w", "-I", "INPUT", "-j", chain); err != nil {
			return err
		}
	}
	n.cuts = nil
	return nil
}

// Drop drops every packet from one agent to another (one way).
func (n *Network) Drop(from, to *Agent) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := runCmd("iptables", "-w", "-A", chain, "-s", from.Addr, "-d", to.Addr, "-j", "DROP"); err != nil {
		return err
	}
	n.cuts = append(n.cuts, from.Name+"->"+to.Name)
	return nil
}

// Partition cuts every link, both ways, between agents of different groups.
func (n *Network) Partition(groups ...[]*Agent) error {
	for i, g := range groups {
		for _, h := range groups[i+1:] {
			for _, a := range g {
				for _, b := range h {
					if err := n.Drop(a, b); err != nil {
						return err
					}
					if err := n.Drop(b, a); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// Heal removes every cut.
func (n *Network) Heal() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := runCmd("iptables", "-w", "-F", chain); err != nil {
		return fmt.Errorf("heal: %w", err)
	}
	n.cuts = nil
	return nil
}

// String lists the current cuts.
func (n *Network) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.cuts, " ")
}

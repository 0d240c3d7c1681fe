//go:build !linux

package redirect

import (
	"errors"
	"runtime"
)

// InNetNS refuses: network namespaces are Linux's.
func InNetNS(string, func() error) error {
	return errors.New("network namespaces are not supported on " + runtime.GOOS)
}

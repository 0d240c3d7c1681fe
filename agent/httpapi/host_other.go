//go:build !unix

package httpapi

import "errors"

// diskUsage is not implemented off Unix.
func diskUsage(path string) (map[string]any, error) {
	return nil, errors.New("disk usage is not collected on this platform")
}

//go:build !unix

package files

import (
	"errors"
	"fmt"
)

// statfsFree is not measured off Unix (the gateway runs on Linux; this keeps the package
// building for the laptop client's platforms): the reserve is not checked there, and a full
// disk is still reported by the write itself.
func statfsFree(dir string) (int64, error) {
	return 0, fmt.Errorf("free space of %s: %w", dir, errors.ErrUnsupported)
}

//go:build !linux

package marlinsim

import (
	"context"
	"errors"
)

// PTY is a Sim served on a pseudo-terminal; only Linux has one (inotify watches the slave).
// Elsewhere OpenPTY fails, so that the binary still builds for `printgate connect`.
type PTY struct {
	// Sim is the simulated printer (its record and Inject).
	Sim *Sim
}

// OpenPTY fails outside Linux.
func OpenPTY(ctx context.Context, cfg Config) (*PTY, error) {
	return nil, errors.New("marlinsim: pty simulator needs linux")
}

// Path returns "" outside Linux.
func (p *PTY) Path() string { return "" }

// Opens returns 0 outside Linux.
func (p *PTY) Opens() int { return 0 }

// Plugs returns 0 outside Linux.
func (p *PTY) Plugs() int { return 0 }

// Close does nothing outside Linux.
func (p *PTY) Close() error { return nil }

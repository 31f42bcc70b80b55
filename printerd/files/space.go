package files

import (
	"errors"
	"fmt"
	"syscall"
)

// DefaultReserve is the free space an upload must leave on the uploads directory's
// filesystem, so that the roster and the audit log (which share the gateway's state disk) can
// always be written: 64 MiB.
const DefaultReserve = 64 << 20

// NoReserve in Config.Reserve turns the reserve off (tests).
const NoReserve = -1

// ErrNoSpace is a full disk, or an upload that would eat into the reserve (507). Nothing of
// the upload is kept.
var ErrNoSpace = errors.New("no space left on the gateway's disk")

// diskFull reports whether err is the filesystem saying it is full (ENOSPC) or the caller's
// quota is (EDQUOT).
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// noSpace wraps a full-disk error as ErrNoSpace, keeping the cause; other errors pass.
func noSpace(err error) error {
	if err != nil && diskFull(err) && !errors.Is(err, ErrNoSpace) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// room returns ErrNoSpace when writing n more bytes would leave less than the reserve free.
// A statfs that fails is not a refusal: the write itself will say if the disk is full.
func (s *Store) room(n int64) error {
	if s.reserve <= 0 {
		return nil
	}
	free, err := s.free()
	if err != nil {
		return nil
	}
	if free-n < s.reserve {
		return fmt.Errorf("%w (%d bytes free, %d kept in reserve)", ErrNoSpace, free, s.reserve)
	}
	return nil
}

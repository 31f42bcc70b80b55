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
	_, err := s.headroom(n)
	return err
}

// headroom is room that also returns the bytes that stay free above the reserve once n more
// are written; -1 when the reserve is off or statfs failed (nothing known).
func (s *Store) headroom(n int64) (int64, error) {
	if s.reserve <= 0 {
		return -1, nil
	}
	free, err := s.free()
	if err != nil {
		return -1, nil
	}
	if free-n < s.reserve {
		return 0, fmt.Errorf("%w (%d bytes free, %d kept in reserve)", ErrNoSpace, free, s.reserve)
	}
	return free - n - s.reserve, nil
}

// roomEvery is the most an upload writes between two looks at the free space.
const roomEvery = 8 << 20

// spaceWatch is Store.room for the chunks of one upload, without a statfs per chunk (issue
// 14: 1,600 of them per 200 MB): after a look that found h bytes of headroom while n uploads
// are in flight, the next min(h/2n, roomEvery) bytes are written without looking again. So
// the uploads together spend at most about half the headroom unseen, and the other half is
// left to whatever else writes meanwhile; close to the reserve, every chunk is looked at. A
// full disk is still caught by the write itself.
type spaceWatch struct {
	s      *Store
	budget int64 // bytes that may be written before the next look
}

func (w *spaceWatch) room(n int64) error {
	if n <= w.budget {
		w.budget -= n
		return nil
	}
	h, err := w.s.headroom(n)
	if err != nil {
		return err
	}
	w.budget = min(h/(2*max(1, w.s.putting.Load())), roomEvery)
	return nil
}

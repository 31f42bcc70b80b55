package files

import (
	"os"

	"golang.org/x/sys/unix"
)

// writebackEvery is how much of an upload may sit dirty in the page cache before the store
// asks the kernel to start writing it out, so the one fsync at the end waits for little.
const writebackEvery = 8 << 20

// writeback starts the kernel's write-out of an upload as it arrives (sync_file_range
// SYNC_FILE_RANGE_WRITE: asynchronous, no durability promise; Put's fsync still gives that).
type writeback struct {
	f        *os.File
	off, due int64
}

func (w *writeback) wrote(n int) {
	w.due += int64(n)
	if w.due < writebackEvery {
		return
	}
	if rc, err := w.f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			unix.SyncFileRange(int(fd), w.off, w.due, unix.SYNC_FILE_RANGE_WRITE)
		})
	}
	w.off += w.due
	w.due = 0
}

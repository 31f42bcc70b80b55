package files

import (
	"os"

	"golang.org/x/sys/unix"
)

// directFlag asks for O_DIRECT on upload files: the chunks go from the pipeline's buffers
// to the disk without a copy into the page cache, whose first-touch cost was a third of the
// gateway's CPU per uploaded byte (issue 14). createTemp drops it where a filesystem refuses.
const directFlag = unix.O_DIRECT

// directAlign is the buffer, length and offset alignment O_DIRECT needs (the logical block
// size of any common disk, and a page).
const directAlign = 4096

// writebackEvery is how much of a buffered (not O_DIRECT) upload may sit dirty in the page
// cache before the store asks the kernel to start writing it out, so the one fsync at the end
// waits for little.
const writebackEvery = 8 << 20

// diskWriter writes an upload's chunks. With O_DIRECT every chunk but the last is a whole
// number of blocks from an aligned buffer; the first write that is not (the tail) turns
// O_DIRECT off for the rest. Without O_DIRECT it starts the kernel's write-out as data
// arrives (sync_file_range SYNC_FILE_RANGE_WRITE: asynchronous, no durability promise; Put's
// fsync still gives that).
type diskWriter struct {
	f        *os.File
	direct   bool
	off, due int64
}

func newDiskWriter(f *os.File) *diskWriter {
	w := &diskWriter{f: f}
	w.control(func(fd int) {
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		w.direct = err == nil && fl&unix.O_DIRECT != 0
	})
	return w
}

func (w *diskWriter) control(fn func(fd int)) {
	if rc, err := w.f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { fn(int(fd)) })
	}
}

// buffered turns O_DIRECT off.
func (w *diskWriter) buffered() {
	w.direct = false
	w.control(func(fd int) {
		if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil {
			unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_DIRECT)
		}
	})
}

func (w *diskWriter) write(b []byte) error {
	if w.direct && len(b)%directAlign != 0 {
		w.buffered()
	}
	n, err := w.f.Write(b)
	if err != nil && w.direct && n == 0 {
		w.buffered() // EINVAL from a filesystem with other alignment rules: write it buffered
		n, err = w.f.Write(b)
	}
	if err != nil {
		return err
	}
	if w.direct {
		return nil
	}
	w.due += int64(n)
	if w.due >= writebackEvery {
		w.control(func(fd int) { unix.SyncFileRange(fd, w.off, w.due, unix.SYNC_FILE_RANGE_WRITE) })
		w.off += w.due
		w.due = 0
	}
	return nil
}

// readAhead tells the kernel that an opened stored file will be read from start to end (a
// download or a print): larger read-ahead, and the file is read into the page cache in the
// background, since O_DIRECT uploads leave none of it there.
func readAhead(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			unix.Fadvise(int(fd), 0, 0, unix.FADV_SEQUENTIAL)
			unix.Fadvise(int(fd), 0, 0, unix.FADV_WILLNEED)
		})
	}
}

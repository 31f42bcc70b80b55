// Package statefile writes files so that a crash or a power cut leaves the old content or
// the new, never a torn file: temp file → write → fsync → rename → fsync(dir).
package statefile

// Every state file of printgate goes through here: the roster and the gateway config
// (enroll), the first-boot QR and config on the FAT boot partition (enroll/firstboot), and the
// audit log's directory (printerd/audit). Temp files are named ".NAME.*.tmp" in the target's
// directory, so a reader that removes leftovers after a crash can find them (IsTemp).

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Write replaces path with data, mode perm: a temp file in the same directory, written,
// fsynced and closed, renamed over path, then the directory fsynced. On error path is
// untouched and the temp file removed.
func Write(path string, data []byte, perm fs.FileMode) error {
	return write(path, data, perm, false)
}

// WriteFAT is Write for a FAT file system (the appliance's boot partition): no chmod, which
// FAT refuses to anyone but the mount's owner (the temp file's 0600 stays), and the file
// fsynced again under its new name, because vfat writes the renamed entry's size lazily and a
// power cut could otherwise leave an empty file.
func WriteFAT(path string, data []byte) error {
	return write(path, data, 0, true)
}

func write(path string, data []byte, perm fs.FileMode, fat bool) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if !fat {
		if err := f.Chmod(perm); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if fat {
		if g, err := os.Open(path); err == nil {
			g.Sync()
			g.Close()
		}
	}
	return SyncDir(dir)
}

// KeepPrevious makes path's current content the previous generation prev, atomically: a
// hard link (or, where links fail, a synced copy) renamed over prev, then fsync(dir). A
// missing path (the first generation) is not an error.
func KeepPrevious(path, prev string) error {
	tmp := filepath.Join(filepath.Dir(prev), "."+filepath.Base(prev)+".link.tmp")
	os.Remove(tmp)
	if err := os.Link(path, tmp); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		data, rerr := os.ReadFile(path)
		if rerr != nil {
			return fmt.Errorf("keep previous %s: %w", path, rerr)
		}
		fi, serr := os.Stat(path)
		if serr != nil {
			return fmt.Errorf("keep previous %s: %w", path, serr)
		}
		return Write(prev, data, fi.Mode().Perm())
	}
	if err := os.Rename(tmp, prev); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("keep previous %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(prev))
}

// SyncDir makes a rename, create or remove in dir durable. A file system that refuses fsync
// on a directory (FAT on older kernels: EINVAL) is not an error; the change has happened.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// IsTemp reports whether a file name is one of Write's temp files (a leftover of a crash
// when no writer runs).
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".tmp")
}

package firstboot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

const syscallNoCTTY = syscall.O_NOCTTY

// writeFileAtomic replaces path with data: temp file in the same directory (mode 0600 by
// CreateTemp; no chmod, which FAT refuses to anyone but the mount's owner), fsync, rename,
// fsync the directory and the file under its new name. A crash leaves the old file or the
// new one, never a torn one.
func writeFileAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	syncDir(dir)
	// FAT keeps a file's size in its directory entry, and vfat writes the renamed entry
	// lazily: fsync the file under its new name so a reader of the card (or a power cut)
	// sees the full file, not an empty one.
	if g, err := os.Open(path); err == nil {
		g.Sync()
		g.Close()
	}
	return nil
}

// syncDir makes a rename or remove in dir durable. Some file systems (FAT among them on older
// kernels) refuse fsync on a directory; the rename has still happened then.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return
	}
}

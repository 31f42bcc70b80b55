package connect

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Two clients with one key steal each other's sessions: the gateway follows whichever
// handshook last. A lock file per key, in the user's runtime (or cache, or temp) directory,
// lets a second `connect` with the same config see the first and say so.

// Lock is a held instance lock; Release gives it back.
type Lock struct{ f *os.File }

// InUseError says another process holds the lock of this key.
type InUseError struct {
	Path string
	PID  int // 0: unknown
}

func (e *InUseError) Error() string {
	who := "another printgate connect"
	if e.PID > 0 {
		who += " (pid " + strconv.Itoa(e.PID) + ")"
	}
	return who + " runs with this config: two clients with one key steal each other's sessions (lock " + e.Path + ")"
}

// LockDir is where the lock files go: $XDG_RUNTIME_DIR on Linux when set, else the user's
// cache directory, else the temporary directory, each with a printgate folder.
func LockDir(getenv func(string) string) string {
	if d := getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "printgate")
	}
	if d, err := os.UserCacheDir(); err == nil {
		if fi, err := os.Stat(filepath.Dir(d)); err == nil && fi.IsDir() {
			return filepath.Join(d, "printgate")
		}
	}
	return filepath.Join(os.TempDir(), "printgate-"+strconv.Itoa(os.Getuid()))
}

// AcquireLock takes the lock for the public key pub in dir. It fails with *InUseError when
// another process holds it.
func AcquireLock(dir string, pub wgtypes.Key) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	// In a shared directory (the temporary one) another user could have made dir first, with
	// a link in it that would have us truncate a file of ours.
	if err := ownDir(dir); err != nil {
		return nil, fmt.Errorf("lock: %s: %w", dir, err)
	}
	sum := sha256.Sum256(pub[:])
	path := filepath.Join(dir, "connect-"+hex.EncodeToString(sum[:8])+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := lockFile(f); err != nil {
		defer f.Close()
		if errors.Is(err, errLocked) {
			b, _ := io.ReadAll(io.LimitReader(f, 32))
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			return nil, &InUseError{Path: path, PID: pid}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Release gives the lock back.
func (l *Lock) Release() error {
	l.f.Truncate(0)
	unlockFile(l.f)
	return l.f.Close()
}

// errLocked is lockFile's answer when another process holds the lock.
var errLocked = errors.New("locked by another process")

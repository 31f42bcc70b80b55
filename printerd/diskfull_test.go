package printerd

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/printgate/printgate/printerd/files"
)

// A full disk answers 507 "no space left on the gateway's disk", whichever way the store
// says so, and an upload that would eat into the reserve kept for roster and audit is
// refused the same way, keeping nothing.
func TestUploadDiskFull507(t *testing.T) {
	for _, err := range []error{files.ErrNoSpace, fmt.Errorf("files: put a: write /x/.upload: %w", syscall.ENOSPC),
		&os.PathError{Op: "write", Path: "/var/lib/printgate/uploads/x", Err: syscall.EDQUOT}} {
		code, body := statusOf(err)
		if code != http.StatusInsufficientStorage || body.Error != "no space left on the gateway's disk" {
			t.Errorf("statusOf(%v) = %d %q, want 507 and the message", err, code, body.Error)
		}
	}

	dir := filepath.Join(t.TempDir(), "uploads")
	h := newHarness(t, func(cfg *Config) {
		store, err := files.New(files.Config{Dir: dir, Reserve: 64 << 20,
			FreeSpace: func() (int64, error) { return 64<<20 + 100, nil }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		pc := cfg.Printers["mk3"]
		pc.Files = store
		cfg.Printers["mk3"] = pc
	})
	w := h.do(uploadReq(adminAddr, "/api/files/local", []formPart{{name: "file", filename: "a.gcode", value: goodGcode + goodGcode}}, true))
	if w.Code != http.StatusInsufficientStorage {
		t.Fatalf("upload onto a full disk: %d %s, want 507", w.Code, w.Body)
	}
	if got := decode(t, w)["error"]; got != "no space left on the gateway's disk" {
		t.Errorf("error = %q", got)
	}
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 0 {
		t.Errorf("uploads dir holds %d entries, want nothing partial", len(es))
	}
}

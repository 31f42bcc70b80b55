package statefile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesAndKeepsPrevious(t *testing.T) {
	dir := t.TempDir()
	path, prev := filepath.Join(dir, "roster.json"), filepath.Join(dir, "roster.prev.json")
	if err := KeepPrevious(path, prev); err != nil {
		t.Fatalf("KeepPrevious of a missing file = %v, want nil", err)
	}
	for i, gen := range []string{"one", "two", "three"} {
		if err := KeepPrevious(path, prev); err != nil {
			t.Fatal(err)
		}
		if err := Write(path, []byte(gen), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(path); string(b) != gen {
			t.Errorf("generation %d: %s = %q, want %q", i, path, b, gen)
		}
		if i > 0 {
			want := []string{"one", "two", "three"}[i-1]
			if b, _ := os.ReadFile(prev); string(b) != want {
				t.Errorf("generation %d: previous = %q, want %q", i, b, want)
			}
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, %v; want 0600", fi.Mode(), err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if IsTemp(e.Name()) {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
}

func TestWriteFailureLeavesOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := Write(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory where the file should be: the rename fails, the temp file goes away.
	if err := Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Error("Write into a missing directory succeeded")
	}
	sub := filepath.Join(dir, "d")
	os.Mkdir(sub, 0o700)
	os.WriteFile(filepath.Join(sub, "x"), nil, 0o600)
	if err := Write(sub, []byte("new"), 0o600); err == nil {
		t.Error("Write over a non-empty directory succeeded")
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("old file = %q", b)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if IsTemp(e.Name()) {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
}

func TestWriteFAT(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "printgate-admin.conf")
	if err := WriteFAT(path, []byte("conf")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "conf" {
		t.Errorf("content = %q", b)
	}
}

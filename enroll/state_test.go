package enroll

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// resealed returns a roster file whose body was changed by edit and whose checksum is right
// again, so only validation (or the version check) can refuse it.
func resealed(t *testing.T, data []byte, version int, edit func(map[string]any)) []byte {
	t.Helper()
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(env.Body, &body); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(body)
	}
	b, _ := json.Marshal(body)
	sum := sha256.Sum256(b)
	env.Body, env.SHA256, env.Version = b, hex.EncodeToString(sum[:]), version
	out, _ := json.Marshal(env)
	return out
}

func TestCorruptRosterFailsClosed(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, good []byte) []byte
		reason string
	}{
		{"empty", func(*testing.T, []byte) []byte { return nil }, "empty"},
		{"whitespace", func(*testing.T, []byte) []byte { return []byte("\n\n") }, "empty"},
		{"truncated", func(_ *testing.T, g []byte) []byte { return g[:len(g)/2] }, "truncated"},
		{"one byte short", func(_ *testing.T, g []byte) []byte { return bytes.TrimRight(g, "\n}")[:len(bytes.TrimRight(g, "\n}"))] }, "truncated"},
		{"bit flip in body", func(t *testing.T, g []byte) []byte {
			i := bytes.Index(g, []byte(`"phone"`))
			if i < 0 {
				t.Fatalf("no peer name in %s", g)
			}
			i++
			b := bytes.Clone(g)
			b[i] ^= 0x01
			return b
		}, "checksum mismatch"},
		{"zeroed tail", func(_ *testing.T, g []byte) []byte {
			b := bytes.Clone(g)
			for i := len(b) / 2; i < len(b); i++ {
				b[i] = 0
			}
			return b
		}, "truncated"},
		{"unknown version", func(t *testing.T, g []byte) []byte { return resealed(t, g, 2, nil) }, "unknown version 2"},
		{"not json", func(*testing.T, []byte) []byte { return []byte("peers: none\n") }, "damaged"},
		{"empty peers body", func(*testing.T, []byte) []byte {
			return []byte(`{"format":"printgate-roster","version":1,"sha256":"","body":{}}`)
		}, "checksum"},
		{"unknown field", func(t *testing.T, g []byte) []byte {
			return resealed(t, g, 1, func(b map[string]any) { b["allow_all"] = true })
		}, "unknown field"},
		{"duplicate address", func(t *testing.T, g []byte) []byte {
			return resealed(t, g, 1, func(b map[string]any) {
				ps := b["peers"].([]any)
				ps[1].(map[string]any)["ipv4"] = ps[0].(map[string]any)["ipv4"]
			})
		}, "invalid content"},
		{"peers null", func(t *testing.T, g []byte) []byte {
			return resealed(t, g, 1, func(b map[string]any) { b["peers"] = nil })
		}, "invalid content"},
		{"bad state", func(t *testing.T, g []byte) []byte {
			return resealed(t, g, 1, func(b map[string]any) { b["peers"].([]any)[0].(map[string]any)["state"] = "trusted" })
		}, "invalid content"},
		{"missing", nil, "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := newState(t, InitOptions{})
			r := openState(t, dir, nil)
			mustEnroll(t, r, Request{Name: "phone"})
			mustEnroll(t, r, Request{Name: "tablet"})
			prevGen := r.Generation() - 1
			r.Close()
			path := filepath.Join(dir, FileRoster)
			good, _ := os.ReadFile(path)
			if tt.damage == nil {
				os.Remove(path)
			} else if err := os.WriteFile(path, tt.damage(t, good), 0o600); err != nil {
				t.Fatal(err)
			}
			for range 2 { // the lock is released after a failed Open
				_, err := Open(dir)
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Open(%s roster) = %v, want ErrCorrupt", tt.name, err)
				}
				msg := err.Error()
				for _, want := range []string{tt.reason, "tunnel stays down", "printgate recover --state " + dir, FileRosterPrev} {
					if !strings.Contains(msg, want) {
						t.Errorf("Open error %q does not mention %q", msg, want)
					}
				}
				var ce *CorruptError
				if !errors.As(err, &ce) || ce.PrevGeneration != prevGen {
					t.Errorf("CorruptError = %+v, want previous generation %d", ce, prevGen)
				}
			}

			// A person asks for the previous generation.
			peers, err := Recover(dir)
			if err != nil {
				t.Fatalf("Recover = %v", err)
			}
			if len(peers) != 1 || peers[0].Name != "phone" {
				t.Errorf("Recover restored %v, want the generation with phone only", peers)
			}
			r2 := openState(t, dir, nil)
			if got := r2.Generation(); got != prevGen+2 {
				t.Errorf("recovered generation = %d, want %d (past the lost one)", got, prevGen+2)
			}
			if _, ok := r2.Peer("phone"); !ok {
				t.Error("recovered roster lacks phone")
			}
			if tt.damage != nil {
				kept, _ := filepath.Glob(filepath.Join(dir, "roster.corrupt-*.json"))
				if len(kept) != 1 {
					t.Errorf("damaged roster kept as %v, want one roster.corrupt-*.json", kept)
				}
			}
			r2.Close()
			if _, err := Recover(dir); err == nil || !strings.Contains(err.Error(), "nothing to recover") {
				t.Errorf("Recover on a good roster = %v, want 'nothing to recover'", err)
			}
		})
	}
}

func TestCorruptWithoutPrevious(t *testing.T) {
	dir, _ := newState(t, InitOptions{}) // generation 1 only: no previous file
	path := filepath.Join(dir, FileRoster)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "restore "+dir+" from a backup") {
		t.Errorf("Open(empty roster, no previous) = %v, want ErrCorrupt naming a backup restore", err)
	}
	if _, err := Recover(dir); err == nil || !strings.Contains(err.Error(), "backup") {
		t.Errorf("Recover without a previous generation = %v, want a backup hint", err)
	}
	if data, _ := os.ReadFile(path); len(data) != 0 {
		t.Error("a refused Recover changed the roster")
	}
}

func TestCorruptGatewayFiles(t *testing.T) {
	tests := []struct {
		name string
		file string
		data []byte
	}{
		{"key garbage", FileGatewayKey, []byte("not a key\n")},
		{"key empty", FileGatewayKey, nil},
		{"gateway empty", FileGateway, nil},
		{"gateway truncated", FileGateway, []byte(`{"format":"printgate-gateway","version":1,`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := newState(t, InitOptions{})
			if err := os.WriteFile(filepath.Join(dir, tt.file), tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(dir); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Open = %v, want ErrCorrupt", err)
			}
		})
	}
	// A gateway.key swapped for another valid key no longer matches gateway.json.
	dir, _ := newState(t, InitOptions{})
	other, _ := newState(t, InitOptions{})
	k, _ := os.ReadFile(filepath.Join(other, FileGatewayKey))
	os.WriteFile(filepath.Join(dir, FileGatewayKey), k, 0o600)
	if _, err := Open(dir); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("Open with a swapped key = %v, want ErrCorrupt 'does not match'", err)
	}
}

func TestPreviousGenerationKept(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	r := openState(t, dir, nil)
	mustEnroll(t, r, Request{Name: "a"})
	cur, _ := os.ReadFile(filepath.Join(dir, FileRoster))
	mustEnroll(t, r, Request{Name: "b"})
	prev, _ := os.ReadFile(filepath.Join(dir, FileRosterPrev))
	if !bytes.Equal(prev, cur) {
		t.Error("roster.prev.json is not the generation before the last write")
	}
	for _, name := range []string{FileRoster, FileRosterPrev, FileGateway, FileGatewayKey, FileLock} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode %#o, want no group/other access", name, fi.Mode().Perm())
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temp file %s left behind", e.Name())
		}
	}
}

func TestFailedWriteChangesNothing(t *testing.T) {
	dir, _ := newState(t, InitOptions{})
	r := openState(t, dir, nil)
	a := mustEnroll(t, r, Request{Name: "a"})
	gen := r.Generation()
	path := filepath.Join(dir, FileRoster)
	good, _ := os.ReadFile(path)
	// A directory where the roster should be: every write fails.
	os.Remove(path)
	if err := os.MkdirAll(filepath.Join(path, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Enroll(Request{Name: "b"}); err == nil {
		t.Fatal("Enroll with an unwritable roster succeeded")
	}
	if _, err := r.Revoke("a"); err == nil {
		t.Fatal("Revoke with an unwritable roster succeeded")
	}
	if _, err := r.AllocatePrinterAddr("mk4"); err == nil {
		t.Fatal("AllocatePrinterAddr with an unwritable roster succeeded")
	}
	if got := r.Peers(); r.Generation() != gen || len(got) != 1 || got[0].State != Pending || len(r.PrinterAddrs()) != 0 {
		t.Errorf("failed writes changed the registry: generation %d -> %d, peers %v", gen, r.Generation(), got)
	}
	if _, ok := r.WhoIs(a.Peer.IPv4); !ok {
		t.Error("a failed Revoke took the peer off")
	}
	os.RemoveAll(path)
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	b := mustEnroll(t, r, Request{Name: "b"})
	if b.Peer.IPv4 != a.Peer.IPv4.Next() {
		t.Errorf("after the failures b got %v, want %v", b.Peer.IPv4, a.Peer.IPv4.Next())
	}
}

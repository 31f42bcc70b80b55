package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func testKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

// newLog opens a fresh log with n records and returns it and its path.
func newLog(t *testing.T, n int) (*Log, string) {
	t.Helper()
	path := Path(t.TempDir())
	l, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { l.Close() })
	key := testKey(t)
	for i := range n {
		err := l.Append(context.Background(), Record{
			Peer: "phone", Key: key, Role: "operator", Action: ActionTerminal,
			Args: map[string]string{"line": fmt.Sprintf("G1 X%d", i), "printer": "mk3"}, Result: "ok",
		})
		if err != nil {
			t.Fatalf("Append #%d: %v", i, err)
		}
	}
	return l, path
}

func lines(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(b, []byte("\n"))[:bytes.Count(b, []byte("\n"))]
}

func TestAppendVerify(t *testing.T) {
	l, path := newLog(t, 5)
	n, err := Verify(bytes.NewReader(mustRead(t, path)))
	if err != nil || n != 5 {
		t.Fatalf("Verify = %d, %v, want 5, nil", n, err)
	}
	h := l.Head()
	if h.Seq != 5 || !isHash(h.Hash) {
		t.Errorf("Head() = %+v", h)
	}
	fh, err := VerifyFile(path)
	if err != nil || fh != h {
		t.Errorf("VerifyFile = %+v, %v, want %+v", fh, err, h)
	}
	recs, err := l.Tail(3)
	if err != nil || len(recs) != 3 || recs[0].Seq != 3 || recs[2].Seq != 5 {
		t.Fatalf("Tail(3) = %+v, %v", recs, err)
	}
	if recs[2].Args["line"] != "G1 X4" || recs[2].Peer != "phone" || recs[2].Key == (wgtypes.Key{}) {
		t.Errorf("Tail record = %+v", recs[2])
	}
	if all, _ := l.Tail(100); len(all) != 5 || all[0].Seq != 1 || all[0].Prev != genesis {
		t.Errorf("Tail(100) = %d records, first %+v", len(all), all[0])
	}
	// Reopen: the chain resumes.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if err := l.Append(context.Background(), Record{Action: "x"}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Append after Close = %v, want net.ErrClosed", err)
	}
	l2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if l2.Head() != h {
		t.Errorf("reopened Head = %+v, want %+v", l2.Head(), h)
	}
	if err := l2.Append(context.Background(), Record{Action: ActionRevoke, Peer: "phone", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	if n, err := Verify(bytes.NewReader(mustRead(t, path))); err != nil || n != 6 {
		t.Errorf("Verify after reopen = %d, %v, want 6", n, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, %v, want 0600", fi.Mode(), err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// forge re-hashes a decoded record after changing it, as a careful attacker would.
func forge(t *testing.T, line []byte, edit func(*wire)) []byte {
	t.Helper()
	r, err := Decode(bytes.TrimSuffix(line, []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	w := r.wire()
	edit(&w)
	w.Hash = hashOf(w)
	return append(encode(w), '\n')
}

func TestVerifyDetectsTampering(t *testing.T) {
	_, path := newLog(t, 6)
	orig := lines(t, path)
	join := func(ls ...[]byte) []byte { return bytes.Join(ls, nil) }
	cp := func() [][]byte {
		out := make([][]byte, len(orig))
		for i, l := range orig {
			out[i] = append([]byte(nil), l...)
		}
		return out
	}
	tests := map[string]struct {
		data     []byte
		wantLine int
	}{
		"edited result": {func() []byte {
			ls := cp()
			ls[2] = bytes.Replace(ls[2], []byte(`"result":"ok"`), []byte(`"result":"no"`), 1)
			return join(ls...)
		}(), 3},
		"edited and rehashed": {func() []byte {
			ls := cp()
			ls[2] = forge(t, ls[2], func(w *wire) { w.Args = map[string]string{"line": "M104 S200"} })
			return join(ls...)
		}(), 4},
		"edited last and rehashed": {func() []byte {
			ls := cp()
			ls[5] = forge(t, ls[5], func(w *wire) { w.Peer = "someone" })
			return join(ls...)
		}(), 0}, // undetectable without the head; checked below against Head
		"removed middle":  {join(orig[0], orig[1], orig[3], orig[4], orig[5]), 3},
		"removed first":   {join(orig[1:]...), 1},
		"reordered":       {join(orig[0], orig[2], orig[1], orig[3], orig[4], orig[5]), 2},
		"duplicated":      {join(orig[0], orig[1], orig[1], orig[2]), 3},
		"inserted forged": {join(orig[0], orig[1], forge(t, orig[2], func(w *wire) { w.Action = "start" }), orig[2]), 4},
		"inserted rechained": {func() []byte {
			// A new record 3 chained to 2, then the old 3.. renumbered: the old 3 no longer links.
			ls := cp()
			ins := forge(t, ls[2], func(w *wire) { w.Action = "start" })
			next := forge(t, ls[2], func(w *wire) { w.Seq = 4 })
			return join(ls[0], ls[1], ins, next)
		}(), 4},
		"whitespace edit":  {join(orig[0], bytes.Replace(orig[1], []byte(`,"action"`), []byte(`, "action"`), 1)), 2},
		"torn last line":   {join(orig[0], orig[1], orig[2][:len(orig[2])-10]), 3},
		"no newline":       {join(orig[0], orig[1], orig[2][:len(orig[2])-1]), 3},
		"unknown field":    {join(orig[0], bytes.Replace(orig[1], []byte(`{"seq"`), []byte(`{"x":1,"seq"`), 1)), 2},
		"garbage":          {join(orig[0], []byte("not json\n")), 2},
		"empty line":       {join(orig[0], []byte("\n"), orig[1]), 2},
		"truncated middle": {join(orig[0], orig[1][:20], []byte("\n"), orig[2]), 2},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			n, err := Verify(bytes.NewReader(tt.data))
			if tt.wantLine == 0 {
				if err != nil {
					t.Fatalf("Verify = %v", err)
				}
				return
			}
			var ce *ChainError
			if !errors.As(err, &ce) || !errors.Is(err, ErrTampered) {
				t.Fatalf("Verify = %d, %v, want a ChainError", n, err)
			}
			if ce.Line != tt.wantLine {
				t.Errorf("Verify error at line %d (%v), want line %d", ce.Line, err, tt.wantLine)
			}
		})
	}
	// The last record rewritten: the chain still verifies, the head does not match.
	forged := join(append(cp()[:5], forge(t, orig[5], func(w *wire) { w.Peer = "someone" }))...)
	h, err := Scan(bytes.NewReader(forged), nil)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := Scan(bytes.NewReader(join(orig...)), nil)
	if h == good {
		t.Errorf("forged head %+v equals the real head", h)
	}
}

func TestOpenRefusesBrokenChain(t *testing.T) {
	l, path := newLog(t, 4)
	l.Close()
	ls := lines(t, path)
	bad := bytes.Join([][]byte{ls[0], ls[2], ls[3]}, nil)
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); !errors.Is(err, ErrTampered) {
		t.Fatalf("Open(broken) = %v, want ErrTampered", err)
	}
	if got := mustRead(t, path); !bytes.Equal(got, bad) {
		t.Errorf("Open(broken) changed the file")
	}
}

func TestOpenRepairsTornTail(t *testing.T) {
	l, path := newLog(t, 3)
	l.Close()
	ls := lines(t, path)
	// A crash mid-write: part of a 4th line.
	if err := os.WriteFile(path, append(bytes.Join(ls, nil), []byte(`{"seq":4,"ti`)...), 0o600); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(path)
	if err != nil {
		t.Fatalf("Open(torn) = %v", err)
	}
	if h := l2.Head(); h.Seq != 4 {
		t.Errorf("Head after repair = %+v, want seq 4 (the torn-tail record)", h)
	}
	recs, _ := l2.Tail(1)
	if len(recs) != 1 || recs[0].Action != ActionTornTail || recs[0].Args["bytes"] != "12" {
		t.Errorf("last record = %+v, want a torn-tail record of 12 bytes", recs)
	}
	l2.Close()
	if _, err := VerifyFile(path); err != nil {
		t.Errorf("VerifyFile after repair: %v", err)
	}
	// A whole record that lost only its newline keeps its content.
	b := mustRead(t, path)
	if err := os.WriteFile(path, b[:len(b)-1], 0o600); err != nil {
		t.Fatal(err)
	}
	l3, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Close()
	if h := l3.Head(); h.Seq != 4 {
		t.Errorf("Head after newline repair = %+v, want seq 4", h)
	}
	if !bytes.Equal(mustRead(t, path), b) {
		t.Errorf("newline repair changed the content")
	}
}

func TestConcurrentAppend(t *testing.T) {
	l, path := newLog(t, 0)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				err := l.Append(context.Background(), Record{Action: ActionUpload, Args: map[string]string{"g": fmt.Sprint(g), "i": fmt.Sprint(i)}})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := l.Tail(2); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n, err := Verify(bytes.NewReader(mustRead(t, path))); err != nil || n != 160 {
		t.Errorf("Verify = %d, %v, want 160", n, err)
	}
}

func TestAppendRejects(t *testing.T) {
	l, _ := newLog(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Append(ctx, Record{Action: "x"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Append(cancelled) = %v", err)
	}
	if err := l.Append(context.Background(), Record{}); err == nil {
		t.Error("Append without action succeeded")
	}
	if err := l.Append(context.Background(), Record{Action: "x", Result: strings.Repeat("a", MaxRecordBytes)}); err == nil {
		t.Error("Append of an oversized record succeeded")
	}
	if h := l.Head(); h.Seq != 0 {
		t.Errorf("refused appends moved the head to %+v", h)
	}
	// Hostile text is stored as data, and the record still verifies.
	rec := Record{Action: ActionRefusal, Peer: "<img src=x>\n\"", Args: map[string]string{"line": "M104 S400\x00\xff"},
		Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))}
	if err := l.Append(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	recs, err := l.Tail(1)
	if err != nil || recs[0].Peer != rec.Peer || !recs[0].Time.Equal(rec.Time) || recs[0].Time.Location() != time.UTC {
		t.Errorf("Tail = %+v, %v", recs, err)
	}
}

func TestTailAcrossChunks(t *testing.T) {
	l, _ := newLog(t, 0)
	big := strings.Repeat("x", 900)
	for i := range 300 {
		if err := l.Append(context.Background(), Record{Action: ActionUpload, Args: map[string]string{"name": big, "i": fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []int{1, 35, 36, 37, 299, 300, 301} {
		recs, err := l.Tail(n)
		if err != nil {
			t.Fatalf("Tail(%d): %v", n, err)
		}
		want := min(n, 300)
		if len(recs) != want || recs[len(recs)-1].Seq != 300 || recs[0].Seq != uint64(300-want+1) {
			t.Errorf("Tail(%d) = %d records from seq %d", n, len(recs), recs[0].Seq)
		}
	}
}

// A failed write leaves the file at its last complete record.
func TestAppendWriteFailure(t *testing.T) {
	l, path := newLog(t, 2)
	before := mustRead(t, path)
	// Swap the file for a read-only handle: the next write fails.
	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	rw := l.f
	l.f = ro
	l.mu.Unlock()
	if err := l.Append(context.Background(), Record{Action: "x"}); err == nil {
		t.Fatal("Append to a read-only file succeeded")
	}
	// The partial record could not be cut from a read-only handle either: appends stop.
	l.mu.Lock()
	l.f = rw
	l.mu.Unlock()
	if err := l.Append(context.Background(), Record{Action: "x"}); err == nil || !strings.Contains(err.Error(), "unusable") {
		t.Fatalf("Append after an uncut failure = %v, want refused", err)
	}
	l.mu.Lock()
	l.failed = nil
	l.mu.Unlock()
	ro.Close()
	if !bytes.Equal(mustRead(t, path), before) {
		t.Errorf("failed Append changed the file")
	}
	if h := l.Head(); h.Seq != 2 {
		t.Errorf("Head after a failed Append = %+v", h)
	}
	if err := l.Append(context.Background(), Record{Action: "y"}); err != nil {
		t.Fatal(err)
	}
	if n, err := Verify(bytes.NewReader(mustRead(t, path))); err != nil || n != 3 {
		t.Errorf("Verify = %d, %v, want 3", n, err)
	}
}

func TestPath(t *testing.T) {
	if got := Path("/var/lib/printgate"); got != filepath.FromSlash("/var/lib/printgate/audit.log") {
		t.Errorf("Path = %q", got)
	}
	if h, err := VerifyFile(filepath.Join(t.TempDir(), "missing.log")); err != nil || h != (Head{}) {
		t.Errorf("VerifyFile(missing) = %+v, %v", h, err)
	}
}

func FuzzDecode(f *testing.F) {
	path := Path(f.TempDir())
	l, err := Open(path)
	if err != nil {
		f.Fatal(err)
	}
	k, _ := wgtypes.GeneratePrivateKey()
	l.Append(context.Background(), Record{Action: "upload", Peer: "p", Key: k.PublicKey(), Args: map[string]string{"a": "b"}})
	l.Close()
	b, _ := os.ReadFile(path)
	f.Add(bytes.TrimSuffix(b, []byte("\n")))
	f.Add([]byte(`{"seq":1}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := Decode(line)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes with the same hash.
		w := r.wire()
		if got := encode(w); !bytes.Equal(got, line) {
			t.Fatalf("Decode(%q) re-encodes to %q", line, got)
		}
		if hashOf(w) != r.Hash {
			t.Fatalf("Decode(%q): hash mismatch accepted", line)
		}
		if _, err := Verify(bytes.NewReader(append(line, '\n'))); err != nil && r.Seq == 1 && r.Prev == genesis {
			t.Fatalf("Verify of a decodable first record: %v", err)
		}
	})
}

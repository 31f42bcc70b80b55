package audit

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
)

type failing struct{ err error }

func (f failing) Append(context.Context, Record) error { return f.err }

func TestWriteAhead(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), FileName)
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Begin(ctx, l, Record{Action: ActionEnroll, Args: map[string]string{"name": "phone"}})
	if err != nil {
		t.Fatal(err)
	}
	// Before End: the intent is on disk, fsynced, and unfinished.
	if _, open, err := Unfinished(path); err != nil || len(open) != 1 || open[0].Args["name"] != "phone" || open[0].Result != ResultIntent {
		t.Fatalf("Unfinished before End = %+v, %v; want the enroll intent", open, err)
	}
	if err := a.End(ctx, nil, map[string]string{"address": "10.77.0.100"}); err != nil {
		t.Fatal(err)
	}
	b, _ := Begin(ctx, l, Record{Action: ActionRevoke, Args: map[string]string{"name": "tablet"}})
	b.End(ctx, errors.New("revoke tablet: not found"), nil)
	c, _ := Begin(ctx, l, Record{Action: ActionRevoke, Args: map[string]string{"name": "laptop"}})
	_ = c // a crash here: no outcome
	l.Close()

	h, open, err := Unfinished(path)
	if err != nil || h.Seq != 5 {
		t.Fatalf("Unfinished = head %+v, %v; want 5 records, chain intact", h, err)
	}
	if len(open) != 1 || open[0].Action != ActionRevoke || open[0].Args["name"] != "laptop" {
		t.Errorf("Unfinished = %+v, want the laptop revoke alone", open)
	}
	if d := Describe(open[0]); d == "" {
		t.Error("Describe is empty")
	}
	recs := readAll(t, path)
	if recs[1].Result != "ok" || recs[1].Args[ArgIntent] != recs[0].Args[ArgIntent] || recs[1].Args["address"] != "10.77.0.100" {
		t.Errorf("outcome record = %+v, want ok, linked to the intent, with the address", recs[1])
	}
	if recs[3].Result != "revoke tablet: not found" {
		t.Errorf("failed outcome = %q", recs[3].Result)
	}
}

func TestBeginFailsClosed(t *testing.T) {
	_, err := Begin(context.Background(), failing{syscall.ENOSPC}, Record{Action: ActionEnroll})
	if !errors.Is(err, ErrNotRecorded) || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Begin on a full disk = %v, want ErrNotRecorded wrapping ENOSPC", err)
	}
}

func readAll(t *testing.T, path string) []Record {
	t.Helper()
	var out []Record
	for _, line := range lines(t, path) {
		r, err := Decode(bytes.TrimSuffix(line, []byte("\n")))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

package files

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// entries lists what is in dir, hidden temporary files included.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// The reserve is kept: an upload that would leave less free is refused with ErrNoSpace
// before it starts or as soon as a chunk would cross it, and nothing of it is kept.
func TestReserveKeptFree(t *testing.T) {
	const reserve = 64 << 20
	var free atomic.Int64 // a disk whose free space shrinks as the upload is written
	var written atomic.Int64
	s, dir, _ := newStore(t, Config{Reserve: reserve, FreeSpace: func() (int64, error) { return free.Load() - written.Load(), nil }})
	ctx := context.Background()
	body := bigFile(3 * chunkSize)

	free.Store(reserve - 1) // already inside the reserve: refused before anything is created
	if _, err := s.Put(ctx, "", "a.gcode", strings.NewReader(body)); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Put inside the reserve = %v, want ErrNoSpace", err)
	}
	free.Store(reserve + chunkSize + 1) // room for one chunk, not for the whole file
	if _, err := s.Put(ctx, "", "b.gcode", &shrinkReader{r: strings.NewReader(body), n: &written}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Put crossing the reserve = %v, want ErrNoSpace", err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("uploads dir holds %q after refusals, want nothing", got)
	}
	free.Store(reserve + int64(len(body)) + chunkSize)
	written.Store(0)
	if _, err := s.Put(ctx, "", "c.gcode", strings.NewReader(body)); err != nil {
		t.Fatalf("Put with room = %v", err)
	}
}

// Far from the reserve an upload looks at the free space every 8 MiB, not at every chunk;
// close to it, at every chunk; and the headroom it finds is never all spent unseen.
func TestReserveLooks(t *testing.T) {
	const reserve = 64 << 20
	var free, written, looks atomic.Int64 // free space shrinks as the upload is read
	s, _, _ := newStore(t, Config{Reserve: reserve, FreeSpace: func() (int64, error) {
		looks.Add(1)
		return free.Load() - written.Load(), nil
	}})
	body := bigFile(24 << 20) // 192 chunks
	for _, tc := range []struct {
		free        int64
		least, most int64
	}{
		{free: 1 << 40, least: 1 + 3, most: 1 + 4},                            // before, then every 8 MiB
		{free: reserve + int64(len(body)) + 4*chunkSize, least: 8, most: 100}, // the headroom halves
	} {
		free.Store(tc.free)
		written.Store(0)
		looks.Store(0)
		if _, err := s.Put(context.Background(), "", "a.gcode", &shrinkReader{r: strings.NewReader(body), n: &written}); err != nil {
			t.Fatalf("Put with %d bytes free: %v", tc.free, err)
		}
		if n := looks.Load(); n > tc.most || n < tc.least {
			t.Errorf("Put of %d bytes with %d free looked %d times, want %d..%d", len(body), tc.free, n, tc.least, tc.most)
		}
	}
}

// With several uploads in flight each spends a share of the headroom unseen: together no
// more than half of it.
func TestReserveShared(t *testing.T) {
	const reserve, headroom = 64 << 20, 64 * chunkSize
	s, _, _ := newStore(t, Config{Reserve: reserve, FreeSpace: func() (int64, error) { return reserve + headroom, nil }})
	for _, n := range []int64{1, 4} {
		s.putting.Store(n)
		w := &spaceWatch{s: s}
		if err := w.room(chunkSize); err != nil {
			t.Fatal(err)
		}
		if want := (headroom - chunkSize) / (2 * n); w.budget != want {
			t.Errorf("with %d uploads in flight: %d bytes before the next look, want %d", n, w.budget, want)
		}
	}
	s.putting.Store(0)
}

type shrinkReader struct {
	r interface{ Read([]byte) (int, error) }
	n *atomic.Int64
}

func (c *shrinkReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// A real full disk (an 8 MiB tmpfs, reserve off): ENOSPC becomes ErrNoSpace and the partial
// temporary file is removed.
func TestDiskFullTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	dir := filepath.Join(mnt, "uploads")
	s, err := New(Config{Dir: dir, Reserve: NoReserve, MaxSize: 64 << 20, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	body := bigFile(12 << 20)
	_, err = s.Put(context.Background(), "", "big.gcode", strings.NewReader(body))
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Put onto a full disk = %v, want ErrNoSpace wrapping ENOSPC", err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("uploads dir holds %q, want nothing partial", got)
	}
	// The space came back: a small file fits.
	if _, err := s.Put(context.Background(), "", "small.gcode", strings.NewReader(bigFile(1<<20))); err != nil {
		t.Errorf("Put after the failure = %v", err)
	}
	// With the default reserve (64 MiB) nothing fits on an 8 MiB disk.
	s2, err := New(Config{Dir: dir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.Put(context.Background(), "", "tiny.gcode", strings.NewReader("G28\n")); !errors.Is(err, ErrNoSpace) {
		t.Errorf("Put under the default reserve = %v, want ErrNoSpace", err)
	}
}

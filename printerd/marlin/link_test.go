package marlin

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestListPorts(t *testing.T) {
	dir := t.TempDir()
	byID := filepath.Join(dir, "by-id")
	if err := os.Mkdir(byID, 0o755); err != nil {
		t.Fatal(err)
	}
	acm0 := filepath.Join(dir, "ttyACM0")
	usb0 := filepath.Join(dir, "ttyUSB0")
	for _, p := range []string{acm0, usb0} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(byID, "usb-Prusa_Research_Original_Prusa_i3_MK3_CZPX1234-if00")
	if err := os.Symlink("../ttyACM0", link); err != nil {
		t.Fatal(err)
	}
	// A dangling link (the printer was unplugged) is left out.
	if err := os.Symlink("../ttyACM9", filepath.Join(byID, "usb-gone-if00")); err != nil {
		t.Fatal(err)
	}
	got, err := listPorts(byID, func() ([]string, error) { return []string{usb0, acm0}, nil })
	if err != nil {
		t.Fatal(err)
	}
	want := []PortInfo{{Path: link, Target: acm0}, {Path: usb0, Target: usb0}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("listPorts() = %+v, want %+v", got, want)
	}
	// No /dev/serial/by-id at all (no USB serial device plugged in) is not an error.
	got, err = listPorts(filepath.Join(dir, "missing"), func() ([]string, error) { return nil, nil })
	if err != nil || len(got) != 0 {
		t.Errorf("listPorts(missing dir) = %v, %v; want nothing, no error", got, err)
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{first: time.Second, max: 8 * time.Second}
	var got []time.Duration
	for i := 0; i < 6; i++ {
		got = append(got, b.next())
	}
	want := []time.Duration{1, 2, 4, 8, 8, 8}
	for i := range want {
		want[i] *= time.Second
	}
	if !slices.Equal(got, want) {
		t.Errorf("back-off = %v, want %v", got, want)
	}
	b.reset()
	if d := b.next(); d != time.Second {
		t.Errorf("after reset next() = %v, want 1s", d)
	}
}

func TestDisconnectConnect(t *testing.T) {
	r := newRig(t, Config{}, nil)
	r.waitState(Operational)
	if err := r.c.Send(context.Background(), "M104 S200"); err != nil {
		t.Fatal(err)
	}
	f := r.fake(0)
	waitFor(t, "M104", func() bool { _, ex := f.snapshot(); return slices.Contains(ex, "M104 S200") })
	if err := r.c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	r.waitState(Disconnected)
	_, ex := f.snapshot()
	if i := slices.Index(ex, "M104 S200"); !slices.Contains(ex[i:], "M104 T0 S0") || !slices.Contains(ex[i:], "M140 S0") {
		t.Errorf("Disconnect did not turn the heaters off first: %q", ex)
	}
	if err := r.c.Send(context.Background(), "G28"); err == nil {
		t.Errorf("Send while disconnected = nil, want an error")
	}
	time.Sleep(200 * time.Millisecond)
	if n := r.nfakes(); n != 1 {
		t.Fatalf("%d connections while disconnected, want 1 (no reconnect by itself)", n)
	}
	if err := r.c.Connect(); err != nil {
		t.Fatal(err)
	}
	r.waitState(Operational)
	if n := r.nfakes(); n != 2 {
		t.Errorf("%d connections after Connect, want 2", n)
	}
}

func TestHaltedNeedsConnect(t *testing.T) {
	r := newRig(t, Config{}, nil)
	r.waitState(Operational)
	if err := r.c.Emergency(); err != nil {
		t.Fatal(err)
	}
	r.waitState(Halted)
	time.Sleep(300 * time.Millisecond)
	if r.nfakes() != 1 || r.c.Status().State != Halted {
		t.Fatalf("after M112 the controller left Halted by itself (%s, %d connections)", r.c.Status().State, r.nfakes())
	}
	if err := r.c.Connect(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new connection", func() bool { return r.nfakes() == 2 })
	r.waitState(Operational)
}

func TestJumpCommands(t *testing.T) {
	r := newRig(t, Config{}, func(f *fakeMarlin) { f.delay = 10 * time.Millisecond })
	r.waitState(Operational)
	for i := 0; i < 20; i++ {
		r.c.Send(context.Background(), "G1 X1")
	}
	for _, cmd := range []string{"M108", "M410"} {
		if err := r.c.Send(context.Background(), cmd); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "M410 at the firmware", func() bool { rec, _ := r.fake(0).snapshot(); return slices.Contains(rec, "M410") })
	rec, _ := r.fake(0).snapshot()
	moves := 0
	for _, l := range rec[:slices.Index(rec, "M108")] {
		if strings.Contains(l, "G1 X1") {
			moves++
		}
	}
	if moves > 2 {
		t.Errorf("%d of 20 queued moves went before M108, want at most 2", moves)
	}
	// Their oks are counted: the queue drains completely afterwards.
	waitFor(t, "all moves", func() bool {
		_, ex := r.fake(0).snapshot()
		n := 0
		for _, l := range ex {
			if l == "G1 X1" {
				n++
			}
		}
		return n == 20
	})
}

// TestIndependentPrinters runs two controllers side by side: what one is told never reaches
// the other, and one halting leaves the other printing.
func TestIndependentPrinters(t *testing.T) {
	a := newRig(t, Config{Name: "a"}, nil)
	b := newRig(t, Config{Name: "b"}, func(f *fakeMarlin) { f.delay = time.Millisecond })
	a.waitState(Operational)
	b.waitState(Operational)
	text, want := genJob(500)
	if err := b.c.Start(context.Background(), "job.gcode", strings.NewReader(text), int64(len(text))); err != nil {
		t.Fatal(err)
	}
	if err := a.c.Emergency(); err != nil {
		t.Fatal(err)
	}
	a.waitState(Halted)
	waitFor(t, "b's job", func() bool { j := b.c.Status().Job; return j != nil && j.Done })
	_, exA := a.fake(0).snapshot()
	_, exB := b.fake(0).snapshot()
	if len(jobCommands(exA)) != 0 || !slices.Equal(jobCommands(exB), want) {
		t.Errorf("printer a ran %d job lines (want 0), b ran %d (want %d)", len(jobCommands(exA)), len(jobCommands(exB)), len(want))
	}
	if a.c.Status().Name != "a" || b.c.Status().State != Operational {
		t.Errorf("a = %+v, b = %+v", a.c.Status(), b.c.Status())
	}
}

// TestNoLeakedGoroutines checks that Run leaves nothing behind after a job and a reconnect.
func TestNoLeakedGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("run", func(t *testing.T) {
		r := newRig(t, Config{}, nil)
		r.waitState(Operational)
		text, _ := genJob(200)
		r.c.Start(context.Background(), "j", strings.NewReader(text), int64(len(text)))
		waitFor(t, "job", func() bool { j := r.c.Status().Job; return j.Done })
		r.fake(0).conn.Close()
		waitFor(t, "reconnect", func() bool { return r.nfakes() == 2 })
		r.waitState(Operational)
		ch, cancel := r.c.Subscribe()
		_ = ch
		defer cancel()
	})
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

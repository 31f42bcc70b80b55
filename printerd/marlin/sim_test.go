package marlin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/printgate/printgate/printerd/marlinsim"
)

// simPort serves a marlinsim.Sim on a pty, the way a USB printer appears: the controller opens
// Path (a symlink, like a /dev/serial/by-id name) through go.bug.st/serial. After an injected
// disconnect the pty is closed, and a new one appears behind the same symlink.
type simPort struct {
	Sim  *marlinsim.Sim
	Path string
}

func startSimPort(t testing.TB, cfg marlinsim.Config) *simPort {
	t.Helper()
	sp := &simPort{Sim: marlinsim.New(cfg), Path: filepath.Join(t.TempDir(), "printer")}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var cur *os.File // the slave held open now
	ready := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		first := true
		for ctx.Err() == nil {
			master, slave, err := openPTY()
			if err != nil {
				if first {
					ready <- err
				}
				return
			}
			if err := rawTerm(slave); err != nil {
				master.Close()
				slave.Close()
				if first {
					ready <- err
				}
				return
			}
			tmp := sp.Path + ".new"
			os.Remove(tmp)
			if err := os.Symlink(slave.Name(), tmp); err == nil {
				os.Rename(tmp, sp.Path)
			}
			mu.Lock()
			cur = slave
			mu.Unlock()
			if ctx.Err() != nil {
				slave.Close()
				master.Close()
				return
			}
			if first {
				ready <- nil
				first = false
			}
			// The test keeps the slave open so that the master never sees a hang-up between
			// the controller's opens; the simulator boots ("start") as it is served.
			err = sp.Sim.Serve(ctx, master)
			slave.Close()
			if !errors.Is(err, marlinsim.ErrDisconnected) {
				if ctx.Err() != nil {
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond): // unplugged for a moment
			}
		}
	}()
	if err := <-ready; err != nil {
		cancel()
		wg.Wait()
		t.Skipf("no pty here: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		// A blocking read on the master ends only when no slave is open any more.
		mu.Lock()
		if cur != nil {
			cur.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return sp
}

// openPTY opens a pty pair with the master non-blocking, so that closing it ends a read in
// progress (creack/pty hands out a blocking descriptor, whose Close waits for the read).
func openPTY() (master, slave *os.File, err error) {
	m, sl, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	fd, err := unix.Dup(int(m.Fd()))
	m.Close()
	if err == nil {
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		sl.Close()
		return nil, nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), sl, nil
}

// rawTerm puts a pty slave in raw mode before anyone opens it, so the simulator's boot text is
// not echoed back to it.
func rawTerm(f *os.File) error {
	fd := int(f.Fd())
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8
	return unix.IoctlSetTermios(fd, unix.TCSETS, tio)
}

// simController runs a controller on sp's pty through go.bug.st/serial.
func simController(t testing.TB, sp *simPort, cfg Config) *Controller {
	t.Helper()
	cfg.Port = sp.Path
	if cfg.Name == "" {
		cfg.Name = "sim"
	}
	if cfg.BootWait == 0 {
		cfg.BootWait = 300 * time.Millisecond
	}
	if cfg.ReconnectMin == 0 {
		cfg.ReconnectMin = 100 * time.Millisecond
	}
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	c := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func waitStateTB(t testing.TB, c *Controller, s State) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for c.Status().State != s {
		if time.Now().After(deadline) {
			st := c.Status()
			t.Fatalf("timed out waiting for state %s (now %s %s)", s, st.State, st.Error)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startJob(t testing.TB, c *Controller, text string) {
	t.Helper()
	if err := c.Start(context.Background(), "job.gcode", strings.NewReader(text), int64(len(text))); err != nil {
		t.Fatalf("Start: %v", err)
	}
}

func waitJobEnd(t testing.TB, c *Controller, limit time.Duration) *Job {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if j := c.Status().Job; j != nil && (j.Done || j.Failed != "" || j.Cancelled) {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job did not end within %v: %+v", limit, c.Status().Job)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSimJob50k is the acceptance test: a 50,000-line job through a pty and go.bug.st/serial
// against the simulator with 1% line noise completes with every line executed exactly once
// and in order, for both resend variants, with and without ADVANCED_OK.
func TestSimJob50k(t *testing.T) {
	lines := 50000
	if testing.Short() {
		lines = 5000
	}
	text, want := genJob(lines)
	for _, tc := range []struct{ advanced, withoutOK bool }{{false, false}, {false, true}, {true, false}, {true, true}} {
		t.Run(fmt.Sprintf("advancedOK=%v/resendWithoutOK=%v", tc.advanced, tc.withoutOK), func(t *testing.T) {
			sp := startSimPort(t, marlinsim.Config{AdvancedOK: tc.advanced, ResendWithoutOK: tc.withoutOK, Noise: 0.01, Seed: 7})
			c := simController(t, sp, Config{Logf: func(string, ...any) {}})
			waitStateTB(t, c, Operational)
			start := time.Now()
			startJob(t, c, text)
			j := waitJobEnd(t, c, 10*time.Minute)
			if !j.Done {
				t.Fatalf("job = %+v, want done", j)
			}
			var got []string
			for _, e := range sp.Sim.Record() {
				if strings.HasPrefix(e.Line, "G1 ") || e.Line == "G28" {
					got = append(got, e.Line)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("simulator executed %d job lines, want %d exactly once in order (first difference at %d)", len(got), len(want), firstDiff(got, want))
			}
			st := sp.Sim.Stats()
			if st.NoisyLines == 0 || st.Resends == 0 {
				t.Errorf("no noise was injected (%+v): the test proves nothing", st)
			}
			t.Logf("%d lines in %v; %d noisy lines, %d resends", len(want), time.Since(start).Round(time.Millisecond), st.NoisyLines, st.Resends)
		})
	}
}

// TestSimUnplug: a disconnect mid-job fails the job with the reason; after the reconnect the
// first commands turn the heaters off, and nothing resumes.
func TestSimUnplug(t *testing.T) {
	sp := startSimPort(t, marlinsim.Config{Faults: []marlinsim.Trigger{{Fault: marlinsim.FaultDisconnect, AtLine: 500}}})
	c := simController(t, sp, Config{})
	waitStateTB(t, c, Operational)
	text, _ := genJob(5000)
	startJob(t, c, text)
	j := waitJobEnd(t, c, time.Minute)
	if !strings.Contains(j.Failed, "link lost") {
		t.Fatalf("job = %+v, want failed with link lost", j)
	}
	waitFor(t, "second boot", func() bool { return sp.Sim.Stats().Boots >= 2 })
	waitStateTB(t, c, Operational)
	time.Sleep(500 * time.Millisecond) // anything that would wrongly resume has time to show
	var second []string
	for _, e := range sp.Sim.Record() {
		if e.Boot >= 2 {
			second = append(second, e.Line)
		}
	}
	want := []string{"M104 T0 S0", "M140 S0", "M108", "M110 N0", "M104 T0 S0", "M140 S0"}
	if len(second) < len(want) || !slices.Equal(second[:len(want)], want) {
		t.Fatalf("after reconnect the simulator executed %q first, want %q", second, want)
	}
	if got := jobCommands(second); len(got) != 0 {
		t.Errorf("after reconnect %d job lines ran (first %q), want none", len(got), got[0])
	}
	if st := c.Status(); st.State != Operational || st.Job.Done {
		t.Errorf("status %s job %+v", st.State, st.Job)
	}
}

// TestSimThermalRunaway: a runaway reported by the firmware stops the job and shows as Halted
// with the reason; nothing is sent after the kill, resends included.
func TestSimThermalRunaway(t *testing.T) {
	for _, f := range []marlinsim.Fault{marlinsim.FaultRunaway, marlinsim.FaultBedRunaway, marlinsim.FaultMaxTemp} {
		t.Run(f.String(), func(t *testing.T) {
			sp := startSimPort(t, marlinsim.Config{Noise: 0.02, Seed: 3, Faults: []marlinsim.Trigger{{Fault: f, AtLine: 300}}})
			c := simController(t, sp, Config{})
			waitStateTB(t, c, Operational)
			text, _ := genJob(5000)
			startJob(t, c, text)
			waitStateTB(t, c, Halted)
			st := c.Status()
			wantText := map[marlinsim.Fault]string{marlinsim.FaultRunaway: "Thermal Runaway, heater 0",
				marlinsim.FaultBedRunaway: "Thermal Runaway, heater bed", marlinsim.FaultMaxTemp: "MAXTEMP triggered, heater 0"}[f]
			if !strings.Contains(st.Error, wantText) || !strings.Contains(st.Job.Failed, wantText) {
				t.Errorf("halted with %q, job failed %q; want %q in both", st.Error, st.Job.Failed, wantText)
			}
			rx := sp.Sim.Stats().RXBytes
			time.Sleep(700 * time.Millisecond) // past the resend-ok detector and a poll
			if got := sp.Sim.Stats().RXBytes; got != rx {
				t.Errorf("%d bytes sent after the kill, want none", got-rx)
			}
		})
	}
}

// TestSimEmergencyFirst: M112 reaches the firmware ahead of a long queue of commands.
func TestSimEmergencyFirst(t *testing.T) {
	sp := startSimPort(t, marlinsim.Config{TimeScale: 1})
	c := simController(t, sp, Config{})
	waitStateTB(t, c, Operational)
	ctx := context.Background()
	if err := c.Send(ctx, "M104 S150"); err != nil { // so that the kill shows in the targets
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		if err := c.Send(ctx, "G4 P100"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the queue to start", func() bool { return slices.Contains(sp.Sim.Executed(), "G4 P100") })
	if err := c.Emergency(); err != nil {
		t.Fatal(err)
	}
	waitStateTB(t, c, Halted)
	time.Sleep(500 * time.Millisecond)
	ex := sp.Sim.Executed()
	dwells := 0
	for _, l := range ex {
		if l == "G4 P100" {
			dwells++
		}
	}
	if dwells > 3 {
		t.Errorf("%d of 40 queued dwells ran, want M112 to have stopped the printer after at most 3", dwells)
	}
	if tg := sp.Sim.Targets(); len(tg) == 0 || tg[len(tg)-1].Cause != "kill" {
		t.Errorf("simulator targets %v, want a kill last", tg)
	}
}

// TestSimWatchdog runs the watchdog against the simulator: over-temperature, silence while
// heating, and heaters left on without a job.
func TestSimWatchdog(t *testing.T) {
	t.Run("over limit", func(t *testing.T) {
		sp := startSimPort(t, marlinsim.Config{})
		c := simController(t, sp, Config{PollInterval: time.Second, Watchdog: WatchdogConfig{MaxHotend: 150}})
		ch, cancel := c.Subscribe()
		defer cancel()
		waitStateTB(t, c, Operational)
		if err := c.Send(context.Background(), "M104 S200"); err != nil {
			t.Fatal(err)
		}
		waitAlarm(t, ch, "above the 150")
		waitStateTB(t, c, Halted)
		waitFor(t, "the kill", func() bool { tg := sp.Sim.Targets(); return tg[len(tg)-1].Cause == "kill" })
	})
	t.Run("silence", func(t *testing.T) {
		sp := startSimPort(t, marlinsim.Config{})
		c := simController(t, sp, Config{PollInterval: time.Second, Watchdog: WatchdogConfig{Silence: 2500 * time.Millisecond}})
		ch, cancel := c.Subscribe()
		defer cancel()
		waitStateTB(t, c, Operational)
		if err := c.Send(context.Background(), "M104 S200"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a report of the target", func() bool { tt := c.Status().Temps.Tools; return len(tt) > 0 && tt[0].Target == 200 })
		sp.Sim.Inject(marlinsim.FaultSilence)
		waitAlarm(t, ch, "no temperature report")
		waitStateTB(t, c, Halted)
	})
	t.Run("idle heaters", func(t *testing.T) {
		sp := startSimPort(t, marlinsim.Config{})
		c := simController(t, sp, Config{PollInterval: time.Second, Watchdog: WatchdogConfig{IdleHeaters: 1500 * time.Millisecond}})
		ch, cancel := c.Subscribe()
		defer cancel()
		waitStateTB(t, c, Operational)
		if err := c.Send(context.Background(), "M140 S60"); err != nil {
			t.Fatal(err)
		}
		waitAlarm(t, ch, "no job")
		waitFor(t, "bed off", func() bool {
			tg := sp.Sim.Targets()
			last := tg[len(tg)-1]
			return last.Heater == "bed" && last.Target == 0
		})
		if st := c.Status(); st.State != Operational {
			t.Errorf("state %s, want operational", st.State)
		}
	})
}

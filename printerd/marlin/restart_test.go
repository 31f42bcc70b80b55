package marlin

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/marlinsim"
)

// killablePort is a serial port a test can "kill -9": the port is closed under the
// controller and nothing more reaches the printer, no heaters-off path, no goodbye.
type killablePort struct {
	mu   sync.Mutex
	rw   io.ReadWriteCloser
	dead bool
}

var errKilled = errors.New("process killed")

func (k *killablePort) Read(b []byte) (int, error) { return k.rw.Read(b) }

func (k *killablePort) Write(b []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dead {
		return 0, errKilled
	}
	return k.rw.Write(b)
}

func (k *killablePort) Close() error { return k.rw.Close() }

func (k *killablePort) kill() {
	k.mu.Lock()
	k.dead = true
	k.mu.Unlock()
	k.rw.Close()
}

// TestRestartMidHeatNoReset is issue 15's crash test in process: a board that does not reset
// when its port opens heats (M104 S200 and M140 S60, or inside an M109 wait); the gateway
// dies without a word (its port closed under it, as kill -9 does); a new controller opens the
// port. The first line the firmware runs after the crash must turn the heaters off, at once,
// not after a boot wait and a handshake.
func TestRestartMidHeatNoReset(t *testing.T) {
	for _, tc := range []struct {
		name      string
		emergency bool
		heat      []string
	}{
		{"M104", false, []string{"M104 S200", "M140 S60"}},
		{"M104/emergency-parser", true, []string{"M104 S200", "M140 S60"}},
		// Without EMERGENCY_PARSER, Marlin reads nothing while it waits in M109: the heaters
		// go off only when the wait ends. With it, the first bytes' M108 ends the wait.
		{"M109/emergency-parser", true, []string{"M140 S60", "M109 S200"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := marlinsim.OpenPTY(context.Background(), marlinsim.Config{
				NoReset: true, EmergencyParser: tc.emergency, TimeScale: 1, Baud: 250000,
				OKLatency: time.Millisecond, Logf: t.Logf,
			})
			if err != nil {
				t.Skipf("no pty here: %v", err)
			}
			t.Cleanup(func() { p.Close() })

			// The first gateway: connect, heat.
			var port *killablePort
			a := New(Config{Name: "before", Port: p.Path(), ReconnectMin: time.Hour, Logf: t.Logf,
				Open: func(ctx context.Context) (io.ReadWriteCloser, error) {
					rw, err := openSerial(ctx, p.Path(), DefaultBaud)
					if err != nil {
						return nil, err
					}
					port = &killablePort{rw: rw}
					return port, nil
				}})
			actx, acancel := context.WithCancel(context.Background())
			adone := make(chan struct{})
			go func() { defer close(adone); a.Run(actx) }()
			t.Cleanup(func() { acancel(); <-adone })
			waitStateTB(t, a, Operational)
			for _, l := range tc.heat {
				if err := a.Send(context.Background(), l); err != nil {
					t.Fatalf("Send(%q): %v", l, err)
				}
			}
			waitFor(t, "heating", func() bool {
				ha, ht, _, bt := p.Sim.Temps()
				return ht == 200 && bt == 60 && ha > 26
			})

			// kill -9.
			port.kill()
			killed := len(p.Sim.Record())
			waitStateTB(t, a, Error)

			// The restarted gateway, with the default boot wait.
			start := time.Now()
			b := New(Config{Name: "after", Port: p.Path(), Logf: t.Logf})
			bctx, bcancel := context.WithCancel(context.Background())
			bdone := make(chan struct{})
			go func() { defer close(bdone); b.Run(bctx) }()
			t.Cleanup(func() { bcancel(); <-bdone })
			var off time.Duration
			waitFor(t, "heaters off", func() bool {
				_, ht, _, bt := p.Sim.Temps()
				off = time.Since(start)
				return ht == 0 && bt == 0
			})
			rec := p.Sim.Record()[killed:]
			if len(rec) < 2 || rec[0].Line != "M104 T0 S0" || rec[1].Line != "M140 S0" {
				var got []string
				for _, e := range rec[:min(len(rec), 6)] {
					got = append(got, e.Line)
				}
				t.Fatalf("after the restart the firmware ran %q first, want M104 T0 S0 then M140 S0", got)
			}
			t.Logf("heaters off %v after the restarted controller started (its boot wait is %v)", off.Round(time.Millisecond), 2*time.Second)
			waitStateTB(t, b, Operational)
		})
	}
}

// TestStopDuringHeatWait: the gateway stopping (or a Disconnect) while the firmware waits in
// M109 ends the wait (M108) so that its heaters-off lines run now, not after the wait.
func TestStopDuringHeatWait(t *testing.T) {
	sp := startSimPort(t, marlinsim.Config{EmergencyParser: true, TimeScale: 1, Baud: 250000, OKLatency: time.Millisecond})
	c := New(Config{Name: "stop", Port: sp.Path, BootWait: 300 * time.Millisecond, Logf: t.Logf})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitStateTB(t, c, Operational)
	if err := c.Send(context.Background(), "M109 S200"); err != nil {
		t.Fatal(err)
	}
	waitExec(t, sp.Sim, "M109 S200")
	cancel()
	<-done
	start := time.Now()
	deadline := start.Add(10 * time.Second) // the wait itself would take 45 s
	for {
		_, ht, _, _ := sp.Sim.Temps()
		if ht == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hotend target %v 10 s after the controller stopped, want 0: the heaters-off lines waited behind M109", ht)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("hotend off %v after Run returned", time.Since(start).Round(time.Millisecond))
}

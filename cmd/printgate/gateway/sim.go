package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/printgate/printgate/printerd/marlinsim"
)

// SimAvailable reports whether this build can run NAME=sim printers.
const SimAvailable = true

// simLatency is the simulated printer's per-ok USB round trip: a native-USB board.
const simLatency = 2 * time.Millisecond

// openSim makes an in-process simulated printer for a NAME=sim spec: a marlinsim.Sim behind
// an in-memory pipe, reset (boot banner, "start") on every open as a real board is. It returns
// the controller's link opener and a function that stops the simulator and waits for it.
func (g *Gateway) openSim(ctx context.Context, spec PrinterSpec) (func(context.Context) (io.ReadWriteCloser, error), func() error, error) {
	baud := spec.Baud
	if baud == 0 {
		baud = 250000
	}
	sim := marlinsim.New(marlinsim.Config{
		Baud:       baud,
		OKLatency:  simLatency,
		AdvancedOK: true,
		// EMERGENCY_PARSER, as most configurations for native-USB 32-bit boards have it:
		// M108 ends a heating wait at once, so a cancel or pause during heat-up is prompt.
		EmergencyParser: true,
		TimeScale:       1,
		Logf:            g.verbosef,
	})
	simCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var mu sync.Mutex
	var prev chan struct{} // closed when the previous connection's Serve returned
	var wg sync.WaitGroup
	open := func(octx context.Context) (io.ReadWriteCloser, error) {
		mu.Lock()
		defer mu.Unlock()
		if prev != nil {
			// The controller closed its end; the simulator follows at once.
			select {
			case <-prev:
			case <-octx.Done():
				return nil, octx.Err()
			}
		}
		if simCtx.Err() != nil {
			return nil, errors.New("simulator stopped")
		}
		host, fw := net.Pipe()
		done := make(chan struct{})
		prev = done
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done)
			if err := sim.Serve(simCtx, fw); err != nil && !errors.Is(err, context.Canceled) {
				g.logf("gateway: printer %s: simulator: %v", spec.Name, err)
			}
		}()
		return host, nil
	}
	closer := func() error {
		cancel()
		wg.Wait()
		return nil
	}
	return open, closer, nil
}

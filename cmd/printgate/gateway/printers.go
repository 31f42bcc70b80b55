package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/printerd/files"
	"github.com/printgate/printgate/printerd/marlin"
	"github.com/printgate/printgate/printerd/policy"
)

// SimPort is the --printer value that runs an in-process simulated printer.
const SimPort = "sim"

// stopTimeout bounds how long Close waits for a controller's heaters-off path.
const stopTimeout = 10 * time.Second

// PrinterSpec is one --printer flag: NAME=PATH[,baud=N] or NAME=sim.
type PrinterSpec struct {
	Name string
	Port string // serial device path, or SimPort
	Baud int    // zero: the controller's default (250000)
	// Window caps the lines in flight when the firmware reports ADVANCED_OK; zero: the
	// firmware's free command slots. 1 is strict ping-pong, as OctoPrint streams: slower, but
	// a line error can never let part of a following line through Marlin's error drain.
	Window int
	// Webcam and Snapshot are a local camera daemon's MJPEG stream and snapshot URLs
	// (loopback only), proxied into the tunnel; empty: none.
	Webcam, Snapshot string
	// CancelScript is a file of G-code run after a cancel has turned heaters and fan off
	// (one command per line); empty: marlin.DefaultCancelScript (retract, lift Z, motors off).
	CancelScript string
}

// Sim reports whether the spec asks for a simulated printer.
func (s PrinterSpec) Sim() bool { return s.Port == SimPort }

// String is the spec as the flag takes it.
func (s PrinterSpec) String() string {
	out := s.Name + "=" + s.Port
	if s.Baud != 0 {
		out += ",baud=" + strconv.Itoa(s.Baud)
	}
	if s.Window != 0 {
		out += ",window=" + strconv.Itoa(s.Window)
	}
	if s.Webcam != "" {
		out += ",webcam=" + s.Webcam
	}
	if s.Snapshot != "" {
		out += ",snapshot=" + s.Snapshot
	}
	if s.CancelScript != "" {
		out += ",cancel-script=" + s.CancelScript
	}
	return out
}

// ParsePrinterSpec parses NAME=PATH[,baud=N][,window=N][,webcam=URL][,snapshot=URL][,cancel-script=FILE]
// or NAME=sim[,...].
func ParsePrinterSpec(v string) (PrinterSpec, error) {
	name, rest, ok := strings.Cut(v, "=")
	if !ok || name == "" || rest == "" {
		return PrinterSpec{}, fmt.Errorf("printer %q: want NAME=SERIALPATH[,baud=N] or NAME=sim", v)
	}
	if err := enroll.ValidateName(name); err != nil {
		return PrinterSpec{}, fmt.Errorf("printer %q: %w", v, err)
	}
	parts := strings.Split(rest, ",")
	spec := PrinterSpec{Name: name, Port: parts[0]}
	if spec.Port == "" {
		return PrinterSpec{}, fmt.Errorf("printer %q: empty serial path", v)
	}
	if spec.Port != SimPort && !strings.HasPrefix(spec.Port, "/") {
		return PrinterSpec{}, fmt.Errorf("printer %q: serial path %q must be absolute (or \"sim\")", v, spec.Port)
	}
	for _, opt := range parts[1:] {
		k, val, _ := strings.Cut(opt, "=")
		switch k {
		case "baud":
			n, err := strconv.Atoi(val)
			if err != nil || n < 300 || n > 4_000_000 {
				return PrinterSpec{}, fmt.Errorf("printer %q: baud %q: want a number from 300 to 4000000", v, val)
			}
			spec.Baud = n
		case "window":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > 16 {
				return PrinterSpec{}, fmt.Errorf("printer %q: window %q: want a number of lines from 1 to 16", v, val)
			}
			spec.Window = n
		case "webcam", "snapshot":
			u, err := url.Parse(val)
			if err != nil || u.Scheme != "http" || u.Host == "" {
				return PrinterSpec{}, fmt.Errorf("printer %q: %s %q: want an http URL of a camera on this machine", v, k, val)
			}
			if k == "webcam" {
				spec.Webcam = val
			} else {
				spec.Snapshot = val
			}
		case "cancel-script":
			if !strings.HasPrefix(val, "/") {
				return PrinterSpec{}, fmt.Errorf("printer %q: cancel-script %q: want an absolute file path", v, val)
			}
			spec.CancelScript = val
		default:
			return PrinterSpec{}, fmt.Errorf("printer %q: unknown option %q (want baud=N, window=N, webcam=URL, snapshot=URL or cancel-script=FILE)", v, k)
		}
	}
	return spec, nil
}

func checkPrinterSpecs(specs []PrinterSpec) error {
	seen := map[string]bool{}
	for _, s := range specs {
		if s.Name == "" || s.Port == "" {
			return fmt.Errorf("printer %q: name and port required", s.String())
		}
		if seen[s.Name] {
			return fmt.Errorf("printer %s named twice", s.Name)
		}
		seen[s.Name] = true
	}
	return nil
}

// printer is one driven printer: its controller and tunnel addresses.
type printer struct {
	spec   PrinterSpec
	addr4  netip.Addr
	addr6  netip.Addr
	pol    *policy.Policy
	ctl    *marlin.Controller
	files  *files.Store // closed by stopPrinters
	closer func() error // releases what the printer's link needs (the simulator); may be nil
	done   chan struct{}

	mu struct {
		sync.Mutex
		runErr error
	}
}

func (p *printer) info() control.PrinterInfo {
	pi := control.PrinterInfo{
		Name:     p.spec.Name,
		Address:  p.addr4.String(),
		Address6: addrString(p.addr6),
		URL:      "http://" + p.addr4.String() + "/",
		Port:     p.spec.Port,
		State:    string(marlin.Disconnected),
	}
	if p.ctl != nil {
		st := p.ctl.Status()
		if st.State != "" {
			pi.State = string(st.State)
		}
		pi.Error = st.Error
	}
	p.mu.Lock()
	if p.mu.runErr != nil && pi.Error == "" {
		pi.Error = p.mu.runErr.Error()
	}
	p.mu.Unlock()
	return pi
}

// startPrinters makes each printer's policy and controller and runs the controllers. Each
// controller's first bytes on a link turn the heaters off (marlin's connect sequence).
func (g *Gateway) startPrinters(ctx context.Context) error {
	for _, p := range g.prs {
		pol, err := policy.New(policy.Limits{})
		if err != nil {
			return fmt.Errorf("printer %s: %w", p.spec.Name, err)
		}
		p.pol = pol
		cfg := marlin.Config{
			Name:   p.spec.Name,
			Port:   p.spec.Port,
			Baud:   p.spec.Baud,
			Filter: pol,
			// MaxInFlight: the spec's window; zero lets the firmware's B field decide.
			MaxInFlight: p.spec.Window,
			Logf:        g.verbosef,
			Errorf:      g.logf,
		}
		if p.spec.CancelScript != "" {
			script, err := readScript(p.spec.CancelScript)
			if err != nil {
				return fmt.Errorf("printer %s: cancel-script: %w", p.spec.Name, err)
			}
			cfg.CancelScript = script
		}
		if p.spec.Sim() {
			open, closer, err := g.openSim(ctx, p.spec)
			if err != nil {
				return fmt.Errorf("printer %s: %w", p.spec.Name, err)
			}
			cfg.Port = "sim:" + p.spec.Name
			cfg.Open = open
			p.closer = closer
		}
		p.ctl = marlin.New(cfg)
		p.done = make(chan struct{})
		g.loops.Add(1)
		go func() {
			defer g.loops.Done()
			defer close(p.done)
			g.logf("gateway: printer %s: controller started on %s", p.spec.Name, p.spec.Port)
			err := p.ctl.Run(ctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				g.logf("gateway: printer %s: controller stopped: %v", p.spec.Name, err)
				p.mu.Lock()
				p.mu.runErr = err
				p.mu.Unlock()
				return
			}
			g.logf("gateway: printer %s: controller stopped", p.spec.Name)
		}()
	}
	return nil
}

// stopPrinters waits (bounded) for the controllers, whose context is already cancelled, to
// finish their heaters-off path.
func (g *Gateway) stopPrinters() {
	deadline := time.After(stopTimeout)
	for _, p := range g.prs {
		if p.done == nil {
			continue
		}
		select {
		case <-p.done:
		case <-deadline:
			g.logf("gateway: printer %s: controller did not stop within %v", p.spec.Name, stopTimeout)
		}
	}
}

// releasePrinters closes the file stores and stops the simulators, once nothing serves them.
func (g *Gateway) releasePrinters() {
	for _, p := range g.prs {
		if p.files != nil {
			if err := p.files.Close(); err != nil {
				g.logf("gateway: printer %s: files: %v", p.spec.Name, err)
			}
		}
		if p.closer != nil {
			if err := p.closer(); err != nil {
				g.logf("gateway: printer %s: %v", p.spec.Name, err)
			}
		}
	}
	g.loops.Wait()
}

// readScript reads a G-code script file (see marlin.ReadScript).
func readScript(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	script, err := marlin.ReadScript(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return script, nil
}

package connect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Printer names are resolved from the gateway's native status, GET /api/v1/printers on the
// gateway's tunnel address (any enrolled device may read it): each printer's name and tunnel
// addresses. The answer is kept for resolveTTL; a name not in it asks again, at most once per
// resolveRetry.
const (
	resolveTTL   = 30 * time.Second
	resolveRetry = 2 * time.Second
	// maxPrintersBody bounds the status answer read.
	maxPrintersBody = 4 << 20
)

// ErrUnknownPrinter is a name the gateway does not list.
var ErrUnknownPrinter = errors.New("no printer of that name")

type resolver struct {
	c *Client

	mu struct {
		sync.Mutex
		names   map[string][]netip.Addr // lower-case name -> addresses, IPv4 first
		fetched time.Time               // when names was last fetched; zero: never
	}
}

func newResolver(c *Client) *resolver { return &resolver{c: c} }

// Resolve returns a printer's tunnel address (IPv4 when it has one). A tunnel address literal
// is returned as it is.
func (c *Client) Resolve(ctx context.Context, name string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(name); err == nil {
		return a.Unmap(), nil
	}
	addrs, err := c.names.lookup(ctx, name)
	if err != nil {
		return netip.Addr{}, err
	}
	return addrs[0], nil
}

func (r *resolver) lookup(ctx context.Context, name string) ([]netip.Addr, error) {
	key := strings.ToLower(name)
	r.mu.Lock()
	addrs, ok := r.mu.names[key]
	age := time.Since(r.mu.fetched)
	fresh := !r.mu.fetched.IsZero() && age < resolveTTL
	recent := !r.mu.fetched.IsZero() && age < resolveRetry
	r.mu.Unlock()
	if ok && fresh || !ok && recent {
		if !ok {
			return nil, fmt.Errorf("printer %q: %w", name, ErrUnknownPrinter)
		}
		return addrs, nil
	}
	names, err := r.fetch(ctx)
	if err != nil {
		if ok {
			return addrs, nil // the gateway is slow to answer: the last answer is still good
		}
		return nil, fmt.Errorf("resolve printer %q: %w", name, err)
	}
	r.mu.Lock()
	r.mu.names, r.mu.fetched = names, time.Now()
	r.mu.Unlock()
	if addrs, ok = names[key]; !ok {
		return nil, fmt.Errorf("printer %q: %w", name, ErrUnknownPrinter)
	}
	return addrs, nil
}

// fetch asks the gateway for its printers.
func (r *resolver) fetch(ctx context.Context) (map[string][]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	url := "http://" + hostPort(netip.AddrPortFrom(r.c.gateway, 80)) + "/api/v1/printers"
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.c.http.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("ask the gateway %v for printers: %w", r.c.gateway, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ask the gateway %v for printers: %s", r.c.gateway, resp.Status)
	}
	return parsePrinters(io.LimitReader(resp.Body, maxPrintersBody))
}

// parsePrinters reads the native status answer: {"printers": [{"name", "address",
// "address6"}], "mesh": [the same, for the printers of the mesh's other gateways]}. A name
// listed twice keeps its first addresses (the home gateway's own printers come first).
// Addresses outside the tunnel's routes are dropped by Dial later, not here.
func parsePrinters(r io.Reader) (map[string][]netip.Addr, error) {
	type entry struct {
		Name     string `json:"name"`
		Address  string `json:"address"`
		Address6 string `json:"address6"`
	}
	var body struct {
		Printers []entry `json:"printers"`
		Mesh     []entry `json:"mesh"`
	}
	if err := json.NewDecoder(r).Decode(&body); err != nil {
		return nil, fmt.Errorf("printer list: %w", err)
	}
	out := make(map[string][]netip.Addr, len(body.Printers)+len(body.Mesh))
	for _, p := range append(body.Printers, body.Mesh...) {
		var addrs []netip.Addr
		for _, s := range []string{p.Address, p.Address6} {
			if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
				addrs = append(addrs, a.Unmap())
			}
		}
		key := strings.ToLower(p.Name)
		if _, dup := out[key]; p.Name != "" && len(addrs) > 0 && !dup {
			out[key] = addrs
		}
	}
	return out, nil
}

// hostPort writes an address as a URL host: the port left out when it is 80.
func hostPort(ap netip.AddrPort) string {
	if ap.Port() == 80 {
		if ap.Addr().Is6() {
			return "[" + ap.Addr().String() + "]"
		}
		return ap.Addr().String()
	}
	return ap.String()
}

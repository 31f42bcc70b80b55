package connect

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// Status is what the status lines show.
type Status struct {
	// LastHandshake is the newest handshake with any peer; zero: none yet.
	LastHandshake time.Time
	// RxBytes and TxBytes count the tunnel's bytes (WireGuard's transfer counters).
	RxBytes, TxBytes int64
	// Listeners are the forwards, then the SOCKS proxy.
	Listeners []ListenerStatus
}

// ListenerStatus is one forward or the SOCKS proxy.
type ListenerStatus struct {
	Name  string   // the forward as Forward.String shows it, or "socks"
	Addr  net.Addr // where it listens
	Open  int      // client connections open now
	Total int64    // client connections since Start
}

// Status returns the device counters and the listeners' connections.
func (c *Client) Status() (Status, error) {
	var st Status
	peers, err := c.dev.Stats()
	if err != nil {
		return st, fmt.Errorf("connect: %w", err)
	}
	for _, p := range peers {
		if p.LastHandshake.After(st.LastHandshake) {
			st.LastHandshake = p.LastHandshake
		}
		st.RxBytes += p.RxBytes
		st.TxBytes += p.TxBytes
	}
	for _, fw := range c.fwds {
		open, total := fw.conns.counts()
		st.Listeners = append(st.Listeners, ListenerStatus{Name: fw.f.String(), Addr: fw.Addr(), Open: open, Total: total})
	}
	if c.socks != nil {
		open, total := c.socks.conns.counts()
		st.Listeners = append(st.Listeners, ListenerStatus{Name: "socks", Addr: c.socks.ln.Addr(), Open: open, Total: total})
	}
	return st, nil
}

// Line renders the status as one line, as of now.
func (st Status) Line(now time.Time) string {
	var b strings.Builder
	if st.LastHandshake.IsZero() {
		b.WriteString("no handshake yet")
	} else {
		fmt.Fprintf(&b, "handshake %s ago", now.Sub(st.LastHandshake).Round(time.Second))
	}
	fmt.Fprintf(&b, ", rx %s, tx %s", byteSize(st.RxBytes), byteSize(st.TxBytes))
	var used []string
	for _, l := range st.Listeners {
		if l.Open > 0 {
			used = append(used, fmt.Sprintf("%s (%d open)", l.Addr, l.Open))
		}
	}
	if len(used) == 0 {
		b.WriteString(", no forward in use")
	} else {
		b.WriteString(", in use: " + strings.Join(used, ", "))
	}
	return b.String()
}

// byteSize writes n in B, KiB, MiB or GiB.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, u := float64(n)/unit, 0
	for f >= unit && u < 2 {
		f /= unit
		u++
	}
	return fmt.Sprintf("%.1f %s", f, []string{"KiB", "MiB", "GiB"}[u])
}

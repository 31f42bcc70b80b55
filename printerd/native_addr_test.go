package printerd

import (
	"net/netip"
	"strings"
	"testing"
)

// TestNativePrinterAddresses: the native status lists each printer's tunnel addresses, which
// `printgate connect` resolves printer names with.
func TestNativePrinterAddresses(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		pc := c.Printers["mk3"]
		pc.Addrs = []netip.Addr{netip.MustParseAddr("10.99.0.11"), netip.MustParseAddr("fd00:99::b")}
		c.Printers["mk3"] = pc
	})
	w := h.do(req{method: "GET", target: "/api/v1/printers", from: viewerAddr, to: gwAddr})
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"address":"10.99.0.11","address6":"fd00:99::b"`) {
		t.Errorf("GET /api/v1/printers = %d %s, want the printer's addresses", w.Code, w.Body)
	}
}

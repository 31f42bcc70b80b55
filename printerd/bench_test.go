package printerd

import (
	"net/http"
	"strings"
	"testing"
)

// BenchmarkUpload streams a 1 MiB G-code file (the harness store's cap) through the upload handler into the real store,
// with the policy checking every line on the way in.
func BenchmarkUpload(b *testing.B) {
	h := newHarness(b)
	line := "G1 X100.123 Y100.456 E0.0321 F1800\n"
	body := strings.Repeat(line, (1<<20-1024)/len(line))
	r := uploadReq(operatorAddr, "/api/files/local", []formPart{{name: "file", filename: "big.gcode", value: body}}, true)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for b.Loop() {
		if w := h.do(r); w.Code != http.StatusCreated {
			b.Fatalf("upload = %d %s", w.Code, w.Body)
		}
	}
}

// BenchmarkPrinterStatus is one slicer poll of /api/printer with 100 history entries.
func BenchmarkPrinterStatus(b *testing.B) {
	h := newHarness(b)
	for range 100 {
		h.pr.setTemps(200, 210)
	}
	r := req{method: "GET", target: "/api/printer?history=true&limit=100", from: viewerAddr, header: map[string]string{"X-Api-Key": "vera-key"}}
	for b.Loop() {
		if w := h.do(r); w.Code != http.StatusOK {
			b.Fatalf("GET = %d", w.Code)
		}
	}
}

// BenchmarkVersion is the cheapest authorized request: identity, key, Host and route checks.
func BenchmarkVersion(b *testing.B) {
	h := newHarness(b)
	r := req{method: "GET", target: "/api/version", from: viewerAddr, header: map[string]string{"X-Api-Key": "vera-key"}}
	for b.Loop() {
		if w := h.do(r); w.Code != http.StatusOK {
			b.Fatalf("GET = %d", w.Code)
		}
	}
}

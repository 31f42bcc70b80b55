package printerd

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/printgate/printgate/printerd/files"
	"github.com/printgate/printgate/printerd/policy"
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

// BenchmarkUploadLarge is the real path without the tunnel: a 32 MB slicer-like file as a
// slicer posts it (multipart) through the OctoPrint upload handler into a policy-checked,
// hashed, fsynced store. cpu-s/100MB is the process's CPU time per 100 MB: what the gateway
// spends beyond the tunnel (bench/throughput's TestRealPath measures the whole).
func BenchmarkUploadLarge(b *testing.B) {
	pol, err := policy.New(policy.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	store, err := files.New(files.Config{Dir: b.TempDir(), MaxSize: 64 << 20, Check: pol.CheckFile})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	h := newHarness(b, func(cfg *Config) {
		cfg.MaxUpload = 64 << 20
		pc := cfg.Printers["mk3"]
		pc.Files = store
		cfg.Printers["mk3"] = pc
	})
	var sb strings.Builder
	for i := 0; sb.Len() < 32_000_000; i++ {
		if i%7 == 0 {
			fmt.Fprintf(&sb, "G1 F1800 X%.3f Y%.3f\n", 20+float64((i*37)%16000)/100, 20+float64((i*53)%16000)/100)
		} else {
			fmt.Fprintf(&sb, "G1 X%.3f Y%.3f E%.5f\n", 20+float64((i*37)%16000)/100, 20+float64((i*53)%16000)/100, float64(i%997)/1000)
		}
	}
	r := uploadReq(operatorAddr, "/api/files/local", []formPart{{name: "file", filename: "big.gcode", value: sb.String()}}, true)
	b.SetBytes(int64(sb.Len()))
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	for b.Loop() {
		if w := h.do(r); w.Code != http.StatusCreated {
			b.Fatalf("upload = %d %s", w.Code, w.Body)
		}
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(cpu.Seconds()*100e6/float64(sb.Len()*b.N), "cpu-s/100MB")
}

package printerd

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/printgate/printgate/printerd/marlin"
)

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("Atoi(%q): %v", s, err)
	}
	return n
}

// TestWebUIInChromium drives the embedded UI in headless Debian chromium over loopback,
// with the fake printer: it loads, shows the printer, uploads a file with progress and prints
// it, the chart grows, a refused temperature names its rule, the job finishes, and the devices
// page enrolls a device with a one-time QR. No console errors, CSP violations or requests to
// any other host. (The integrator's test does the same through the real tunnel.)
func TestWebUIInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the browser test in -short mode")
	}
	browser := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		t.Skip("chromium not installed (Debian package chromium)")
	}
	h := newHarness(t, func(c *Config) { c.Hosts = []string{"printgate.test"} })
	addr := h.serveAs(adminAddr, gwAddr, h.s.ServeGateway)
	_, port, _ := net.SplitHostPort(addr)
	base := "http://printgate.test:" + port

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("host-resolver-rules", "MAP printgate.test 127.0.0.1"),
		chromedp.Flag("proxy-server", "direct://"),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancel()
	ctx, tcancel := context.WithTimeout(ctx, 90*time.Second)
	defer tcancel()

	var mu sync.Mutex
	var problems, requests []string
	listen := func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeWarning {
				problems = append(problems, "console "+string(e.Type))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+e.ExceptionDetails.Text)
		case *log.EventEntryAdded:
			// The refused temperature below is an expected 422 in the network log.
			if (e.Entry.Level == log.EntryLevelError || strings.Contains(e.Entry.Text, "Content Security Policy")) && !strings.Contains(e.Entry.Text, "422") {
				problems = append(problems, "log: "+e.Entry.Text)
			}
		case *network.EventRequestWillBeSent:
			requests = append(requests, e.Request.URL)
		}
	}
	if err := chromedp.Listen(ctx, listen); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, log.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Logf("network.Enable: %v", err)
	}

	gcode := filepath.Join(t.TempDir(), "cube.gcode")
	if err := os.WriteFile(gcode, []byte(strings.Repeat(goodGcode, 2000)), 0o600); err != nil {
		t.Fatal(err)
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}
	attr := func(sel, name string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.AttributeValue(sel, name))
		if err != nil {
			t.Fatalf("attribute %s of %s: %v", name, sel, err)
		}
		return v.Value
	}
	// A phone-sized screen; PRINTGATE_UI_SCREENSHOTS=DIR saves what the test sees.
	shots := os.Getenv("PRINTGATE_UI_SCREENSHOTS")
	shot := func(name string) {
		t.Helper()
		if shots == "" {
			return
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err == nil {
			err = os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644)
		}
		if err != nil {
			t.Errorf("screenshot %s: %v", name, err)
		}
	}
	err := chromedp.Do(ctx,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)),
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(`body[data-ready="true"]`),
		chromedp.WaitVisible(`.printer-card[data-printer="mk3"]`),
	)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	shot("1-overview")
	if cards := text(`#printer-list`); !strings.Contains(cards, "mk3") {
		t.Errorf("overview = %q", cards)
	}
	err = chromedp.Do(ctx,
		chromedp.Navigate(base+"/#/printer/mk3"),
		chromedp.WaitVisible(`#job-state[data-state="operational"]`),
		chromedp.WaitVisible(`#push-state[data-state="open"]`),
		chromedp.SetUploadFiles(`#file-input`, []string{gcode}),
		chromedp.Click(`#upload-print`),
		chromedp.Click(`#btn-upload`),
		chromedp.WaitVisible(`#upload-status[data-state="done"]`),
		chromedp.WaitVisible(`#file-list tr[data-path="cube.gcode"]`),
		chromedp.WaitVisible(`#job-state[data-state="printing"]`),
	)
	if err != nil {
		t.Fatalf("upload and print: %v (status %q)", err, text(`#upload-status`))
	}
	if p := attr(`#upload-progress`, "value"); p != "100" {
		t.Errorf("upload progress bar = %q, want 100", p)
	}
	if st := h.pr.Status(); st.State != marlin.Printing || st.Job.File != "cube.gcode" {
		t.Fatalf("printer after upload and print: %s %+v", st.State, st.Job)
	}
	before := attr(`#temp-chart`, "data-points")
	// The push coalesces changes into one status per interval: heat up step by step.
	for i := range 5 {
		h.pr.setTemps(100+float64(i)*20, 210)
		want := fmt.Sprint(mustAtoi(t, before) + i + 1)
		waitFor(t, "chart point "+want, func() bool { return attr(`#temp-chart`, "data-points") == want })
	}
	shot("2-printing")
	// Phone layout: nothing wider than the screen.
	wide, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && e.offsetParent !== null).map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).slice(0, 8)`))
	if err != nil || len(wide) > 0 {
		t.Errorf("wider than a %s px phone screen: %q %v", "390", wide, err)
	}
	if got := text(`#temp-tool0`); got != "180.0 / 210 °C" {
		t.Errorf("hotend reading = %q", got)
	}
	h.pr.progress(int64(len(goodGcode)*1000), false)
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(`#btn-pause:not([disabled])`),
		chromedp.SetValue(`#target-tool0`, "400"),
		chromedp.Click(`#btn-set-tool0`),
		chromedp.WaitVisible(`#control-error[data-rule="max-temperature"]`),
	)
	if err != nil {
		t.Fatalf("chart and refusal: %v (points %s → %s)", err, before, attr(`#temp-chart`, "data-points"))
	}
	for _, l := range h.pr.lines() {
		if strings.Contains(l, "S400") {
			t.Errorf("refused temperature reached the printer: %q", l)
		}
	}
	h.pr.progress(int64(len(goodGcode)*2000), true)
	err = chromedp.Do(ctx,
		chromedp.WaitVisible(`#job-state[data-state="operational"]`),
		chromedp.WaitVisible(`#job-progress[data-state="done"]`),
	)
	if err != nil {
		t.Fatalf("finish: %v", err)
	}
	shot("3-refused-and-done")
	if pct := text(`#job-progress-text`); pct != "100.0 %" {
		t.Errorf("progress text after done = %q", pct)
	}
	err = chromedp.Do(ctx,
		chromedp.Navigate(base+"/#/devices"),
		chromedp.WaitVisible(`#device-list tr[data-device="oscar"][data-clone="true"]`),
		chromedp.SendKeys(`#enroll-name`, "phone2"),
		chromedp.Click(`#btn-enroll`),
		chromedp.WaitVisible(`#enroll-result`),
	)
	if err != nil {
		t.Fatalf("devices: %v", err)
	}
	shot("4-enrolled")
	if qr := attr(`#enroll-qr`, "src"); !strings.HasPrefix(qr, "data:image/svg+xml;base64,") {
		t.Errorf("QR src = %.40q", qr)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/#/audit"), chromedp.WaitVisible(`#audit-list tr`)); err != nil {
		t.Fatalf("audit: %v", err)
	}
	shot("5-audit")
	if v := attr(`html`, "data-csp-violations"); v != "" {
		t.Errorf("CSP violations: %s (%s)", v, attr(`html`, "data-csp-last"))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("browser: %s", p)
	}
	for _, r := range requests {
		u, err := url.Parse(r)
		if err != nil || (u.Host != "printgate.test:"+port && u.Scheme != "data") {
			t.Errorf("request to another origin: %s", r)
		}
	}
	if len(requests) == 0 {
		t.Errorf("no network requests seen")
	}
}

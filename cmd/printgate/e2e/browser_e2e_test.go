package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// uiChromium is Debian's chromium.
const uiChromium = "/usr/bin/chromium"

// uiBrowserLog is what the page did that the test checks afterwards: every request's URL,
// console errors, uncaught exceptions and browser-log errors (CSP violations among them).
type uiBrowserLog struct {
	mu       sync.Mutex
	requests []string
	problems []string
}

func (b *uiBrowserLog) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		if ev.Request != nil {
			b.requests = append(b.requests, ev.Request.URL)
		}
	case *network.EventWebSocketCreated:
		b.requests = append(b.requests, ev.URL)
	case *runtime.EventConsoleAPICalled:
		if ev.Type == "error" || ev.Type == "assert" {
			var args []string
			for _, a := range ev.Args {
				if a.Value != nil {
					args = append(args, string(a.Value))
				} else {
					args = append(args, a.Description)
				}
			}
			b.problems = append(b.problems, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil {
			text += " " + d.Exception.Description
		}
		b.problems = append(b.problems, fmt.Sprintf("exception: %s (%s:%d)", text, d.URL, d.LineNumber))
	case *log.EventEntryAdded:
		e := ev.Entry
		if e.Level == "error" || e.Source == "security" || e.Source == "violation" {
			b.problems = append(b.problems, fmt.Sprintf("log %s/%s: %s (%s)", e.Source, e.Level, e.Text, e.URL))
		}
	}
}

func (b *uiBrowserLog) snapshot() (requests, problems []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.requests...), append([]string(nil), b.problems...)
}

// uiThrottle limits what the client namespace sends on its link to the gateway to rate (tc
// syntax, e.g. "8mbit") with a token bucket on its veth, so that an upload through the tunnel
// takes long enough to watch; it returns the function that lifts the limit. The browser's own
// network emulation is not used: Chromium 148 and later refuse upload throttling through
// DevTools, while the kernel's shaping works whatever the browser.
func uiThrottle(t *testing.T, ns netns, dev, rate string) (lift func()) {
	t.Helper()
	if out, err := ns.cmd("tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", "32kb", "latency", "1s").CombinedOutput(); err != nil {
		t.Fatalf("throttle %s in %s with tc tbf (iproute2, and the kernel's sch_tbf): %v\n%s", dev, ns.name, err, out)
	}
	return func() {
		if out, err := ns.cmd("tc", "qdisc", "del", "dev", dev, "root").CombinedOutput(); err != nil {
			t.Errorf("lift the throttle on %s: %v\n%s", dev, err, out)
		}
	}
}

// uiBrowserTest drives Debian's headless chromium, run inside the admin's client namespace,
// through the tunnel to the web UI on the gateway address: it loads the printer page, uploads
// a file with a visible progress bar, starts the print from the file list, sees the
// temperature chart move and the job finish, then approves an app-key request on the devices
// page. Screenshots are kept. The page must log no
// console error, no exception, no CSP violation, and make no request to any host but the
// gateway's tunnel address.
func uiBrowserTest(t *testing.T, u *uiLab) {
	if _, err := os.Stat(uiChromium); err != nil {
		t.Skipf("needs Debian's chromium at %s (apt-get install chromium): %v", uiChromium, err)
	}
	uiWaitIdle(t, u)
	art := artifacts(t)
	t.Logf("screenshots in %s", art)
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		t.Skipf("needs ip: %v", err)
	}

	// chromedp talks to the browser over --remote-debugging-pipe (fds 3 and 4), so no
	// debugging port exists anywhere; `ip netns exec` puts the browser in the namespace and
	// keeps those descriptors.
	var out syncBuffer
	keepLog(t, "chromium.log", &out)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(uiChromium),
		chromedp.DisableGPU,
		chromedp.NoSandbox,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.WindowSize(1000, 1500),
		chromedp.CombinedOutput(&out),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.Args = append([]string{"ip", "netns", "exec", u.admin.ns.name, uiChromium}, cmd.Args[1:]...)
			cmd.Path = ipPath
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		}),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	blog := &uiBrowserLog{}
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithListener(blog.listen))
	defer cancelBrowser()
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium in %s: %v\n%s", u.admin.ns.name, err, out.String())
	}
	ctx, cancel := context.WithTimeout(bctx, 4*time.Minute)
	defer cancel()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v\nbrowser output:\n%s", what, err, uiClip([]byte(out.String())))
		}
	}
	_, err = chromedp.Call(ctx, network.Enable, network.EnableParams{})
	must("Network.enable", err)
	_, err = chromedp.Call(ctx, log.Enable, struct{}{})
	must("Log.enable", err)
	_, err = chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__uiCSP = [];
document.addEventListener('securitypolicyviolation', (e) => window.__uiCSP.push(e.violatedDirective + ' ' + e.blockedURI));`,
	})
	must("inject the CSP listener", err)

	shot := func(name string) {
		t.Helper()
		b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Errorf("screenshot %s: %v", name, err)
			return
		}
		p := filepath.Join(art, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Errorf("screenshot %s: %v", name, err)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		must("evaluate "+expr, err)
		return v
	}
	waitJS := func(what string, timeout time.Duration, expr string) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for eval(expr) != "true" {
			if time.Now().After(deadline) {
				shot("timeout.png")
				t.Fatalf("timed out after %v waiting in the browser for %s (%s)", timeout, what, expr)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// Load the printer page through the tunnel.
	page0 := "http://" + u.gw + "/#/printer/" + uiPrinter
	must("navigate "+page0, chromedp.Do(ctx,
		chromedp.Navigate(page0),
		chromedp.WaitReady(chromedp.CSS(`body[data-ready="true"]`)),
		chromedp.WaitVisible(chromedp.ID("view-printer")),
	))
	waitJS("the printer shown operational", 30*time.Second,
		`String(document.getElementById('job-state').dataset.state === 'operational')`)
	if who := eval(`document.getElementById('whoami').dataset.role`); who != "admin" {
		t.Errorf("whoami role in the page = %q, want admin", who)
	}
	shot("01-printer.png")

	// Upload a file with visible progress: the admin's link is throttled to 8 Mbit/s (about
	// 1 MB/s) so that a 3 MiB file takes a few seconds, and a mutation observer records every
	// value the progress bar shows.
	f := uiGcode(t, t.TempDir(), "browser.gcode", 300, 3<<20)
	lift := uiThrottle(t, u.admin.ns, u.lab.veth1, "8mbit")
	defer func() { lift() }()
	eval(`(() => {
  const bar = document.getElementById('upload-progress');
  window.__uiProgress = [];
  new MutationObserver(() => window.__uiProgress.push(bar.value)).observe(bar, {attributes: true, attributeFilter: ['value']});
  const status = document.getElementById('upload-status');
  window.__uiStatus = [];
  new MutationObserver(() => window.__uiStatus.push(status.textContent)).observe(status, {childList: true, characterData: true, subtree: true});
  document.getElementById('upload-print').checked = false;
  return 'ok';
})()`)
	must("choose the file", chromedp.Do(ctx, chromedp.SetUploadFiles(chromedp.ID("file-input"), []string{f})))
	must("click upload", chromedp.Do(ctx, chromedp.Click(chromedp.ID("btn-upload"))))
	waitJS("the progress bar part way", 30*time.Second,
		`String((() => { const v = document.getElementById('upload-progress').value; return v > 0 && v < 100 || document.getElementById('upload-status').dataset.state !== 'uploading'; })())`)
	if eval(`String(document.getElementById('upload-status').dataset.state === 'uploading' && document.getElementById('upload-progress').hidden)`) == "true" {
		t.Errorf("the upload progress bar is hidden during the upload")
	}
	shot("02-uploading.png")
	waitJS("the upload done", 60*time.Second, `String(document.getElementById('upload-status').dataset.state !== 'uploading')`)
	if st := eval(`document.getElementById('upload-status').dataset.state + ': ' + document.getElementById('upload-status').textContent`); !strings.HasPrefix(st, "done") {
		t.Fatalf("upload status %q, want done", st)
	}
	progress := eval(`JSON.stringify(window.__uiProgress)`)
	t.Logf("upload progress values shown: %s", progress)
	if !uiPartWay(progress) {
		t.Errorf("the progress bar showed %s: want a value between 0 and 100 during the upload, and 100 at the end", progress)
	}
	statuses := eval(`JSON.stringify(window.__uiStatus)`)
	if !uiStatusPercent(statuses) {
		t.Errorf("the upload status read %s: want a percentage between 0 and 100 %% during the upload", uiClip([]byte(statuses)))
	}
	lift()
	lift = func() {}

	// Start the print from the file list; remember the chart as it was.
	row := `#file-list tr[data-path="browser.gcode"] .btn-print`
	must("file listed", chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(row))))
	chart0 := eval(`document.getElementById('temp-chart').toDataURL()`)
	points0 := eval(`document.getElementById('temp-chart').dataset.points || '0'`)
	must("click Print", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(row))))
	waitJS("the job of browser.gcode to start", 30*time.Second,
		`String(document.getElementById('job-file').textContent === 'browser.gcode' && ['printing', 'done'].includes(document.getElementById('job-progress').dataset.state))`)
	if eval(`document.getElementById('job-progress').dataset.state`) == "printing" {
		shot("03-printing.png")
	}

	// The job finishes: progress 100, state done, printer operational again.
	waitJS("the job to finish", 2*time.Minute,
		`String(document.getElementById('job-progress').dataset.state === 'done' && document.getElementById('job-progress').value === 100)`)
	waitJS("the printer operational again", 30*time.Second,
		`String(document.getElementById('job-state').dataset.state === 'operational')`)
	if txt := eval(`document.getElementById('job-progress-text').textContent`); !strings.HasPrefix(txt, "100") {
		t.Errorf("job progress text = %q, want 100 %%", txt)
	}

	// The chart moved: new points drawn, and the canvas pixels differ.
	waitJS("the temperature chart to move", 30*time.Second,
		`String(Number(document.getElementById('temp-chart').dataset.points || 0) >= `+points0+` + 2 && document.getElementById('temp-chart').toDataURL() !== `+fmt.Sprintf("%q", chart0)+`)`)
	t.Logf("chart points: %s at print start, %s now", points0, eval(`document.getElementById('temp-chart').dataset.points`))
	shot("04-done.png")

	// The decision on an app-key request made in the web UI: Cura on the operator's device
	// asks, the admin clicks Approve on the devices page, Cura's next poll gets the key.
	op := u.operator
	r := uiMustCurl(t, op.ns, "-H", "Content-Type: application/json", "--data-binary", `{"app":"Cura"}`, "http://"+u.pr+"/plugin/appkeys/request")
	token, _ := r.json()["app_token"].(string)
	if r.code != 201 || token == "" {
		t.Fatalf("POST /plugin/appkeys/request = %v, want 201 and app_token", r)
	}
	approve := fmt.Sprintf(`#appkey-list tr[data-token=%q] .btn-approve`, token)
	must("open the devices page", chromedp.Do(ctx,
		chromedp.Navigate("http://"+u.gw+"/#/devices"),
		chromedp.WaitReady(chromedp.CSS(`body[data-ready="true"]`)),
		chromedp.WaitVisible(chromedp.ID("view-devices")),
		chromedp.WaitVisible(chromedp.CSS(approve)),
	))
	shot("05-devices.png")
	// The list is redrawn every 3 s, so the button is found and clicked in one step.
	waitJS("Approve clicked", 10*time.Second,
		fmt.Sprintf(`String((() => { const b = document.querySelector(%q); if (b) b.click(); return !!b; })())`, approve))
	waitJS("the request gone from the list", 20*time.Second,
		fmt.Sprintf(`String(document.querySelector(%q) === null)`, approve))
	r = uiMustCurl(t, op.ns, "http://"+u.pr+"/plugin/appkeys/request/"+token)
	key, _ := r.json()["api_key"].(string)
	if r.code != 200 || key == "" {
		t.Fatalf("Cura's poll after the approval in the web UI = %v, want 200 and api_key", r)
	}
	op.key = key
	if r := uiMustCurl(t, op.ns, "-H", "X-Api-Key: "+key, "http://"+u.pr+"/api/settings"); r.code != 200 {
		t.Errorf("GET /api/settings with the key approved in the web UI = %v, want 200", r)
	}

	// Tables at desktop and phone width: every visible header has its cells under it.
	uiCheckTables(t, eval, "desktop")
	shot("06-devices-desktop.png")
	must("phone width", chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile)))
	time.Sleep(300 * time.Millisecond) // a layout pass
	uiCheckTables(t, eval, "phone")
	shot("07-devices-phone.png")

	// The printer whose port is missing, at phone width and then at desktop width: no live
	// temperatures, the reason shown, controls that need the link disabled, and a connect
	// answered with the reason.
	ghost := func(width string) {
		t.Helper()
		must("open "+uiGhost, chromedp.Do(ctx,
			chromedp.Navigate("http://"+u.gw+"/#/"),
			chromedp.WaitReady(chromedp.CSS(`body[data-ready="true"]`)),
			chromedp.WaitVisible(chromedp.CSS(`.printer-card[data-printer="`+uiGhost+`"]`)),
		))
		card := eval(`document.querySelector('.printer-card[data-printer="` + uiGhost + `"]').innerText`)
		if strings.Contains(card, "°C") {
			t.Errorf("%s: the offline printer's card shows temperatures as live: %q", width, card)
		}
		reason := eval(`(() => { const s = window.__uiGhost; return s && s.error || ''; })()`)
		if reason != "" && !strings.Contains(card, reason) {
			t.Errorf("%s: the card of %s (%s) lacks its reason %q", width, uiGhost, card, reason)
		}
		shot("08-overview-" + width + ".png")
		must("open "+uiGhost, chromedp.Do(ctx,
			chromedp.Navigate("http://"+u.gw+"/#/printer/"+uiGhost),
			chromedp.WaitVisible(chromedp.ID("view-printer")),
		))
		waitJS(uiGhost+" shown", 10*time.Second, `String(document.getElementById('job-state').dataset.state !== '')`)
		if tt := eval(`document.getElementById('temp-tool0').textContent + ' ' + document.getElementById('temp-bed').textContent`); strings.Contains(tt, "°C") {
			t.Errorf("%s: the offline printer shows temperatures %q", width, tt)
		}
		enabled := eval(`JSON.stringify([...document.querySelectorAll('#panel-temps button, #panel-move button, #file-list .btn-print, #btn-pause, #btn-resume, #btn-cancel, #btn-disconnect, #btn-emergency')].filter((b) => !b.disabled).map((b) => b.id || b.className))`)
		if enabled != "[]" {
			t.Errorf("%s: controls enabled on the offline printer: %s", width, enabled)
		}
		if eval(`String(document.getElementById('btn-connect').disabled)`) != "false" {
			t.Errorf("%s: Connect disabled on the offline printer", width)
		}
		eval(`(() => { document.getElementById('btn-connect').click(); return 'ok'; })()`)
		waitJS("the failed connect reported", 20*time.Second,
			`String((() => { const m = document.getElementById('message'); return !m.hidden && m.dataset.kind === 'error' && m.textContent !== ''; })())`)
		msg := eval(`document.getElementById('message').textContent`)
		t.Logf("%s: Connect on %s: %q", width, uiGhost, msg)
		if reason != "" && !strings.Contains(msg, reason) {
			t.Errorf("%s: Connect on %s said %q, want the reason %q", width, uiGhost, msg, reason)
		}
		if pe := eval(`(() => { const p = document.getElementById('printer-error'); return p.hidden ? '' : p.textContent; })()`); reason != "" && pe != reason {
			t.Errorf("%s: the printer page shows the error %q, want %q", width, pe, reason)
		}
		shot("09-ghost-" + width + ".png")
	}
	ghostStatus := `(() => { window.__uiGhost = null; fetch('/api/v1/printers/` + uiGhost + `', {headers: {'X-Printgate': '1'}}).then((r) => r.json()).then((j) => { window.__uiGhost = j; }); return 'ok'; })()`
	eval(ghostStatus)
	waitJS("the ghost status", 10*time.Second, `String(!!window.__uiGhost)`)
	t.Logf("%s status: %s", uiGhost, eval(`JSON.stringify(window.__uiGhost)`))
	ghost("phone")
	must("desktop width", chromedp.Do(ctx, chromedp.EmulateReset()))
	eval(ghostStatus)
	waitJS("the ghost status", 10*time.Second, `String(!!window.__uiGhost)`)
	ghost("desktop")
	// The error message of the failed connect is expected; clear it for the check below.
	eval(`(() => { document.getElementById('message').hidden = true; return 'ok'; })()`)

	csp := eval(`JSON.stringify(window.__uiCSP || null)`)
	if csp != "[]" {
		t.Errorf("CSP violations seen by the page: %s", csp)
	}
	msg := eval(`(() => { const m = document.getElementById('message'); return m.hidden || m.dataset.kind === 'info' ? '' : m.dataset.kind + ': ' + m.textContent; })()`)
	if msg != "" {
		t.Errorf("the page shows an error message: %q", msg)
	}

	requests, problems := blog.snapshot()
	for _, p := range problems {
		t.Errorf("browser: %s", p)
	}
	hosts := map[string]int{}
	for _, r := range requests {
		pu, err := url.Parse(r)
		if err != nil {
			t.Errorf("request to an unparsable URL %q", r)
			continue
		}
		switch pu.Scheme {
		case "data", "blob", "about":
			continue
		}
		hosts[pu.Scheme+"://"+pu.Host]++
		if pu.Host != u.gw || (pu.Scheme != "http" && pu.Scheme != "ws") {
			t.Errorf("request to %s: only http/ws to the gateway %s is allowed", r, u.gw)
		}
	}
	t.Logf("browser requests by origin: %v (%d in all)", hosts, len(requests))
	if len(requests) == 0 {
		t.Errorf("no requests recorded: the network listener saw nothing")
	}
}

// uiPartWay reports whether a JSON list of progress values has one strictly between 0 and
// 100 and ends at 100.
func uiPartWay(list string) bool {
	list = strings.Trim(list, "[]")
	if list == "" {
		return false
	}
	vals := strings.Split(list, ",")
	part := false
	for _, v := range vals {
		var f float64
		fmt.Sscan(v, &f)
		part = part || f > 0 && f < 100
	}
	return part && strings.TrimSpace(vals[len(vals)-1]) == "100"
}

// uiStatusPercent reports whether a JSON list of upload status texts has one with a
// percentage strictly between 0 and 100.
func uiStatusPercent(list string) bool {
	var texts []string
	if json.Unmarshal([]byte(list), &texts) != nil {
		return false
	}
	for _, s := range texts {
		if m := uiPercentRE.FindStringSubmatch(s); m != nil {
			if n, _ := strconv.Atoi(m[1]); n > 0 && n < 100 {
				return true
			}
		}
	}
	return false
}

var uiPercentRE = regexp.MustCompile(`(\d+) %`)

// uiCheckTables checks every table on the page: each header column shown has its cells shown
// in every row, at the header's left edge and width, and each hidden header has its cells
// hidden.
func uiCheckTables(t *testing.T, eval func(string) string, width string) {
	t.Helper()
	bad := eval(`JSON.stringify((() => {
  const bad = [];
  const shown = (e) => { if (!e) return false; const r = e.getBoundingClientRect(); return getComputedStyle(e).display !== 'none' && r.width > 0; };
  for (const tbl of document.querySelectorAll('table')) {
    if (!tbl.offsetParent) continue;
    const ths = [...tbl.querySelectorAll('thead th')];
    let rows = 0;
    for (const tr of tbl.querySelectorAll('tbody tr')) {
      const tds = [...tr.children];
      if (tds.length === 1 && tds[0].colSpan > 1) continue;
      rows++;
      ths.forEach((th, i) => {
        const td = tds[i], what = (tbl.id || tbl.className || 'table') + ' column ' + (i + 1) + ' "' + th.textContent + '"';
        if (shown(th) !== shown(td)) { bad.push(what + ': header ' + (shown(th) ? 'shown' : 'hidden') + ', cell ' + (shown(td) ? 'shown' : 'hidden')); return; }
        if (!shown(th)) return;
        const a = th.getBoundingClientRect(), b = td.getBoundingClientRect();
        if (Math.abs(a.left - b.left) > 1 || Math.abs(a.width - b.width) > 1) bad.push(what + ': header at ' + a.left.toFixed(0) + '+' + a.width.toFixed(0) + ', cell at ' + b.left.toFixed(0) + '+' + b.width.toFixed(0));
      });
    }
    if (tbl.classList.contains('devices') && !rows) bad.push('devices: no rows to check');
  }
  return bad;
})())`)
	if bad == "[]" {
		return
	}
	t.Errorf("%s width: tables misaligned: %s", width, bad)
}

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/printgate/printgate/cmd/printgate/connect"
	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/enroll/control"
	"github.com/printgate/printgate/printerd/audit"
	"github.com/printgate/printgate/printerd/marlinsim"
)

// TestDaemonKillWriteAhead is issue 15's kill -9 test for the daemon's printer and file
// actions: `printgate run` with a simulated printer on a pty serves an admin device (an
// in-process WireGuard client) that sends terminal lines (M104 S<n>) and uploads back to
// back; the daemon is killed with SIGKILL at a random moment, restarted, and so on. The
// simulator outlives every daemon and keeps what the firmware executed; the files stay on
// disk. At the end every line the firmware ran has an intent in the audit log (as many
// intents as executions, per line), every stored file an upload intent, and the chain is
// intact: no action without its record, whatever the moment of the kill.
// Measured with 200 rounds (2026-12-03, a loaded 2-core machine): 96 kills between an intent
// and its outcome, 3,941 client lines run by the firmware and 1,856 files stored, 0 without a
// record; 190 s. The default 40 rounds keep it near 40 s.
func TestDaemonKillWriteAhead(t *testing.T) {
	rounds := 40
	if testing.Short() {
		rounds = 6
	}
	dir := t.TempDir()
	link := filepath.Join(dir, "ttyKill")
	p, err := marlinsim.OpenPTY(context.Background(), marlinsim.Config{Link: link})
	if err != nil {
		t.Skipf("no pty here: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	state := initLoopback(t, dir)
	conf := filepath.Join(dir, "admin.conf")
	pgOK(t, "enroll", "--state", state, "admin1", "--role", "admin", "--qr", "none", "--conf", conf)
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := enroll.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 15))
	var acked, sent atomic.Int64
	landed := 0 // kills that left an intent without its outcome
	for round := range rounds {
		// A third of the rounds kill at a random moment, a third as soon as an intent is on
		// record (between the intent and the action's outcome), a third the moment the
		// firmware runs a client line (after the action was applied, before its outcome).
		before := unfinished(t, state)
		killDaemonMidActions(t, state, link, dc, round, killAt(round%3), p.Sim, rng, &sent, &acked)
		if unfinished(t, state) > before {
			landed++
		}
	}

	executed := map[string]int{}
	for _, e := range p.Sim.Record() {
		if clientLine(e.Line) {
			executed[e.Line]++
		}
	}
	// What the audit log holds.
	intents := map[string]int{}
	uploadIntents, namedUploads := 0, map[string]bool{}
	f, err := os.Open(audit.Path(state))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head, err := audit.Scan(f, func(r audit.Record) error {
		switch {
		case r.Action == audit.ActionTerminal && r.Result == audit.ResultIntent:
			intents[r.Args["lines"]]++
		case r.Action == audit.ActionUpload && r.Result == audit.ResultIntent:
			uploadIntents++
		case r.Action == audit.ActionUpload && r.Result == "ok":
			namedUploads[r.Args["file"]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatalf("audit log after %d kills: %v", rounds, err)
	}
	_, open, err := audit.Unfinished(audit.Path(state))
	if err != nil {
		t.Fatal(err)
	}
	unfinishedUploads := 0
	for _, r := range open {
		if r.Action == audit.ActionUpload {
			unfinishedUploads++
		}
	}

	total, unrecorded := 0, 0
	for line, n := range executed {
		total += n
		if n > intents[line] {
			unrecorded += n - intents[line]
			t.Errorf("the firmware ran %q %d times; the audit log has %d intents for it", line, n, intents[line])
		}
	}
	// Stored files: each named by an upload's outcome, or covered by an upload intent a kill
	// left without its outcome.
	var stored, unnamed []string
	filepath.WalkDir(filepath.Join(state, "files"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(d.Name(), ".gcode") && !strings.HasPrefix(d.Name(), ".") {
			stored = append(stored, d.Name())
			if !namedUploads[d.Name()] {
				unnamed = append(unnamed, d.Name())
			}
		}
		return nil
	})
	if len(unnamed) > unfinishedUploads {
		t.Errorf("%d stored files without an upload outcome (%v), but only %d unfinished upload intents", len(unnamed), unnamed, unfinishedUploads)
	}
	t.Logf("%d kills (%d between an intent and its outcome): %d requests sent, %d acknowledged; the firmware ran %d client lines, %d without a record; "+
		"%d files stored (%d upload intents); audit log %d records, %d intents without an outcome",
		rounds, landed, sent.Load(), acked.Load(), total, unrecorded, len(stored), uploadIntents, head.Seq, len(open))
	if total == 0 || len(stored) == 0 || landed == 0 {
		t.Error("no client line reached the firmware, no file was stored, or no kill landed between an intent and its outcome: the test did not exercise the write-ahead")
	}
	out := pgOK(t, "audit", "verify", "--state", state)
	if want := fmt.Sprintf("%d intents without an outcome", len(open)); len(open) > 0 && !strings.Contains(out, want) {
		t.Errorf("audit verify = %q, want %q", out, want)
	}
}

// clientLineRE is what the client sends: M104 S<n> with n > 0 (the daemon's own heaters-off
// line is S0).
var clientLineRE = regexp.MustCompile(`^M104 S[1-9][0-9]*$`)

func clientLine(l string) bool { return clientLineRE.MatchString(l) }

// killAt is when a round kills the daemon.
type killAt int

const (
	killRandom killAt = iota // at a random moment after the first acknowledged action
	killIntent               // as soon as the newest audit record is an intent
	killExec                 // as soon as the firmware runs a client line
)

// killDaemonMidActions is one round: start the daemon, wait for the printer, send actions
// back to back from the admin device, and kill -9 the daemon at the moment at says.
func killDaemonMidActions(t *testing.T, state, link string, dc enroll.DeviceConfig, round int, at killAt, sim *marlinsim.Sim, rng *rand.Rand, sent, acked *atomic.Int64) {
	t.Helper()
	cmd := exec.Command(binPath, "run", "--state", state, "--interface", "none", "--printer", "mk="+link)
	var log syncBuffer
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		cmd.Process.Kill()
		<-done
	}()
	var printer netip.Addr
	waitFor(t, fmt.Sprintf("round %d: printer operational", round), 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := control.Unix(state).Call(ctx, control.Request{Op: control.OpStatus})
		if err != nil || resp.Status == nil || len(resp.Status.Printers) != 1 || resp.Status.Printers[0].State != "operational" {
			return false
		}
		printer, err = netip.ParseAddr(resp.Status.Printers[0].Address)
		return err == nil
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := connect.Start(ctx, connect.Config{Device: dc})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return c.Dial(ctx, netip.AddrPortFrom(printer, 80))
		},
	}}
	defer hc.CloseIdleConnections()
	base := "http://" + printer.String()
	var wg sync.WaitGroup
	wg.Add(1)
	firstAck := make(chan struct{})
	go func() {
		defer wg.Done()
		var once sync.Once
		for k := 0; ctx.Err() == nil; k++ {
			var req *http.Request
			if k%3 == 2 {
				var body bytes.Buffer
				mw := multipart.NewWriter(&body)
				fw, _ := mw.CreateFormFile("file", fmt.Sprintf("r%d-%d.gcode", round, k))
				fw.Write([]byte("G28\nG1 X10 Y10 F3000\n"))
				mw.Close()
				req, _ = http.NewRequestWithContext(ctx, "POST", base+"/api/files/local", &body)
				req.Header.Set("Content-Type", mw.FormDataContentType())
			} else {
				cmd := fmt.Sprintf(`{"command":"M104 S%d"}`, 1+(round*97+k)%250)
				req, _ = http.NewRequestWithContext(ctx, "POST", base+"/api/printer/command", strings.NewReader(cmd))
				req.Header.Set("Content-Type", "application/json")
			}
			req.Header.Set("X-Printgate", "1")
			sent.Add(1)
			resp, err := hc.Do(req)
			if err != nil {
				return // the daemon is gone
			}
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				acked.Add(1)
				once.Do(func() { close(firstAck) })
			}
		}
	}()
	select {
	case <-firstAck:
	case <-time.After(20 * time.Second):
		t.Fatalf("round %d: no action acknowledged in 20 s; daemon log:\n%s", round, tailLines(log.String(), 30))
	}
	switch at {
	case killRandom:
		time.Sleep(time.Duration(rng.Int64N(int64(300 * time.Millisecond))))
	case killIntent:
		tail := newestRecord(t, audit.Path(state))
		for !strings.Contains(tail(), `"result":"intent"`) {
			time.Sleep(100 * time.Microsecond)
		}
	case killExec:
		mark := len(sim.Record())
		for ran := false; !ran; {
			time.Sleep(100 * time.Microsecond)
			for _, e := range sim.Record()[mark:] {
				ran = ran || clientLine(e.Line)
			}
		}
	}
	cmd.Process.Kill() // SIGKILL: no outcome, no clean close
	<-done
	cancel()
	wg.Wait()
}

// newestRecord follows the audit log from its current end; the function it returns reads
// what was appended since and returns the newest complete line ("" before the first).
func newestRecord(t *testing.T, path string) func() string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		t.Fatal(err)
	}
	var pending []byte
	newest := ""
	buf := make([]byte, 64<<10)
	return func() string {
		for {
			n, _ := f.ReadAt(buf, off)
			if n == 0 {
				return newest
			}
			off += int64(n)
			pending = append(pending, buf[:n]...)
			if i := bytes.LastIndexByte(pending, '\n'); i >= 0 {
				lines := bytes.Split(pending[:i], []byte("\n"))
				newest = string(lines[len(lines)-1])
				pending = append([]byte(nil), pending[i+1:]...)
			}
		}
	}
}

// unfinished counts the intents without an outcome in the audit log of state.
func unfinished(t *testing.T, state string) int {
	t.Helper()
	_, open, err := audit.Unfinished(audit.Path(state))
	if err != nil {
		t.Fatal(err)
	}
	return len(open)
}

package printerd

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/printgate/printgate/printerd/files"
)

// brokenFiles is a store whose listing fails with a cause that names a host path.
type brokenFiles struct{ nopFiles }

var errDisk = errors.New("read /srv/printgate/files/mk3: input/output error")

func (brokenFiles) List(string, bool) ([]files.FileInfo, error) { return nil, errDisk }

// logLines collects formatted log lines.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logLines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// TestInternalErrorID: a handler error that maps to 500 gives the client an error id and no
// cause; the error log (not only the verbose one) has one line with the same id and the cause.
func TestInternalErrorID(t *testing.T) {
	for _, tc := range []struct {
		face   string
		target string
		to     netip.Addr
	}{
		{"octoprint", "/api/files", printerAddr},
		{"native", "/api/v1/printers/mk3/files", gwAddr},
	} {
		t.Run(tc.face, func(t *testing.T) {
			var errs, verbose logLines
			h := newHarness(t, func(c *Config) {
				pc := c.Printers["mk3"]
				pc.Files = brokenFiles{}
				c.Printers["mk3"] = pc
				c.Errorf = errs.logf
				c.Logf = verbose.logf
			})
			r := req{method: http.MethodGet, target: tc.target, from: viewerAddr, to: tc.to}
			w := h.do(r)
			if w.Code != http.StatusInternalServerError {
				t.Fatalf("GET %s = %d %s, want 500", tc.target, w.Code, w.Body)
			}
			body := decode(t, w)
			id, _ := body["error_id"].(string)
			if !regexp.MustCompile(`^[0-9a-f]{8}$`).MatchString(id) {
				t.Fatalf("body %v: error_id %q, want 8 hex digits", body, id)
			}
			msg, _ := body["error"].(string)
			if !strings.Contains(msg, id) || strings.Contains(msg, "/srv/") {
				t.Errorf("body error %q: want the id %s and no cause", msg, id)
			}
			var found []string
			for _, l := range errs.all() {
				if strings.Contains(l, id) {
					found = append(found, l)
				}
			}
			if len(found) != 1 || !strings.Contains(found[0], errDisk.Error()) || !strings.Contains(found[0], tc.target) {
				t.Errorf("error log %q: want one line with id %s, the path and the cause %q", errs.all(), id, errDisk)
			}
			if again := decode(t, h.do(r))["error_id"]; again == id {
				t.Errorf("a second 500 has the same error id %s", id)
			}
		})
	}
}

// TestClientErrorsLogVerbose: a 4xx is the client's to read; it goes to the verbose log only.
func TestClientErrorsLogVerbose(t *testing.T) {
	var errs, verbose logLines
	h := newHarness(t, func(c *Config) { c.Errorf, c.Logf = errs.logf, verbose.logf })
	if w := h.do(req{method: http.MethodGet, target: "/api/files/local/nothing.gcode", from: viewerAddr}); w.Code != http.StatusNotFound {
		t.Fatalf("GET missing file = %d, want 404", w.Code)
	}
	if l := errs.all(); len(l) != 0 {
		t.Errorf("error log %q after a 404, want nothing", l)
	}
	if l := verbose.all(); len(l) == 0 || !strings.Contains(l[len(l)-1], "404") {
		t.Errorf("verbose log %q, want the 404", l)
	}
}

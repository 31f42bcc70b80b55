package printerd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/printgate/printgate/printerd/audit"
)

// failingAudit refuses every record, as a full disk would.
type failingAudit struct{}

func (failingAudit) Append(context.Context, audit.Record) error {
	return errors.New("write audit.log: no space left on device")
}
func (failingAudit) Tail(int) ([]audit.Record, error) { return nil, nil }

// TestAuditFailureReachesErrorLog: an audit record that cannot be written is logged at the
// error level (the daemon's default log) with its cause, not only at verbose level.
func TestAuditFailureReachesErrorLog(t *testing.T) {
	var mu sync.Mutex
	var errs, verbose []string
	h := newHarness(t, func(c *Config) {
		c.Audit = failingAudit{}
		c.Logf = func(f string, a ...any) { mu.Lock(); verbose = append(verbose, fmt.Sprintf(f, a...)); mu.Unlock() }
		c.Errorf = func(f string, a ...any) { mu.Lock(); errs = append(errs, fmt.Sprintf(f, a...)); mu.Unlock() }
	})
	h.do(req{method: "DELETE", target: "/api/v1/devices/oscar", from: adminAddr, to: gwAddr})
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(strings.Join(errs, "\n"), "no space left on device") {
		t.Errorf("error log = %q, want the failed audit append with its cause (verbose log: %q)", errs, verbose)
	}
}

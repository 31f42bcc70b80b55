package marlin

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// TestUnopenableSerialPortLogsError: a serial port that cannot be opened reaches the error
// log (the daemon's default log) on the first try, with the path and the reason, and the
// same error again on every retry does not flood it.
func TestUnopenableSerialPortLogsError(t *testing.T) {
	const path = "/dev/serial/by-id/nonexistent-printgate-test"
	errs := make(chan string, 16)
	c := New(Config{Name: "x", Port: path, Logf: t.Logf,
		Errorf: func(format string, args ...any) {
			select {
			case errs <- fmt.Sprintf(format, args...):
			default:
			}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	line := <-errs
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if !strings.Contains(line, path) || !strings.Contains(line, "no such file") {
		t.Errorf("error log line = %q, want the path %s and the reason", line, path)
	}
	if st := c.Status(); !strings.Contains(st.Error, path) {
		t.Errorf("status error = %q, want the path", st.Error)
	}
}

package gateway

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/enroll"
)

// TestEventsLoggedOnce: an enrollment and a life-cycle event (here an expiry; activation and
// clone take the same path) each make one log line, not one from the roster and one from the
// gateway.
func TestEventsLoggedOnce(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, fmt.Sprintf(format, args...))
	}
	g, err := Start(context.Background(), Config{StateDir: newState(t), StatsInterval: 50 * time.Millisecond, Logf: logf})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer g.Close()
	if _, err := g.Enroll(enroll.Request{Name: "photo", TTL: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	count := func(subs ...string) int {
		n := 0
		for _, l := range lines {
			all := true
			for _, s := range subs {
				all = all && strings.Contains(l, s)
			}
			if all {
				n++
			}
		}
		return n
	}
	waitFor(t, "the expiry logged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return count("photo", "expired") > 0
	})
	g.Close() // both log lines of one event would come from the same stats round
	mu.Lock()
	defer mu.Unlock()
	if n := count("photo", "enrolled"); n != 1 {
		t.Errorf("%d log lines for the enrollment, want 1:\n%s", n, strings.Join(lines, "\n"))
	}
	if n := count("photo", "expired"); n != 1 {
		t.Errorf("%d log lines for the expiry, want 1:\n%s", n, strings.Join(lines, "\n"))
	}
}

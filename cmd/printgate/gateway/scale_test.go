package gateway

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/enroll"
)

// TestMeshEnrollmentsAtScale: 1,000 enrollments through the three gateways of an in-process
// mesh, 12 at a time; every gateway's `peers --json` then lists the same 1,000 devices. The time is logged,
// not asserted.
func TestMeshEnrollmentsAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 enrollments through raft: not in -short")
	}
	const n, writers = 1000, 12
	m := newTestMesh(t, 3, nil)
	start := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				gw := m.gws[i%3]
				name := fmt.Sprintf("dev%04d", i)
				deadline := time.Now().Add(90 * time.Second)
				for {
					_, err := gw.Enroll(enroll.Request{Name: name})
					if err == nil {
						break
					}
					if !unsettled(err) || time.Now().After(deadline) {
						t.Errorf("enroll %s on %s: %v", name, gw.name, err)
						break
					}
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	took := time.Since(start)
	// `peers --json` byte for byte: every device pending with the same expiry, created
	// time, address, key and home on every gateway.
	var a string
	waitFor(t, "the same devices on every gateway", func() bool {
		a = peersJSON(t, m.gws[0])
		return len(m.gws[0].Peers()) == n && a == peersJSON(t, m.gws[1]) && a == peersJSON(t, m.gws[2])
	})
	if got := strings.Count(a, `"state": "pending"`); got != n {
		t.Errorf("%d devices listed pending, want %d", got, n)
	}
	t.Logf("%d enrollments through 3 gateways, %d at a time: %v; every gateway lists them all after %v", n, writers, took, time.Since(start))
}

package gateway

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/enroll"
)

// TestMeshEnrollmentsAtScale: 1,000 enrollments through the three gateways of an in-process
// mesh, 12 at a time; every gateway then lists the same 1,000 devices. The time is logged,
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
	names := func(gw *meshGW) string {
		s := ""
		for _, p := range gw.Peers() {
			s += p.Name + "/" + p.Address + "/" + p.Gateway + " "
		}
		return s
	}
	waitFor(t, "the same devices on every gateway", func() bool {
		a := names(m.gws[0])
		return len(m.gws[0].Peers()) == n && a == names(m.gws[1]) && a == names(m.gws[2])
	})
	t.Logf("%d enrollments through 3 gateways, %d at a time: %v; every gateway lists them all after %v", n, writers, took, time.Since(start))
}

package netstack

import (
	"io"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestBulk echoes 1 MiB on each of 12 concurrent connections (more flows than GRO has
// buckets, so flows share buckets) between two wired stacks, over IPv4 and IPv6: GRO merges
// and the bounded queue must neither lose nor stall data.
func TestBulk(t *testing.T) {
	srv := newStack(t, a4, a6)
	cli := newStack(t, b4, b6)
	wire(t, srv, cli)
	echo(t, srv, netip.AddrPortFrom(a4, 80))
	echo(t, srv, netip.AddrPortFrom(a6, 80))
	const n = 1 << 20
	var wg sync.WaitGroup
	for i := range 12 {
		addr := a4
		if i%2 == 1 {
			addr = a6
		}
		c := dial(t, cli, netip.AddrPortFrom(addr, 80))
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			errc := make(chan error, 1)
			go func() {
				_, err := io.CopyN(c, zeroReader{}, n)
				errc <- err
			}()
			got, err := io.CopyN(io.Discard, c, n)
			if err != nil || got != n {
				t.Errorf("conn %d to %v: echoed %d bytes, err %v; want %d", i, addr, got, err, n)
			}
			if err := <-errc; err != nil {
				t.Errorf("conn %d: write: %v", i, err)
			}
		}()
	}
	wg.Wait()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

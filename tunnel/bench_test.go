package tunnel_test

import (
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/printgate/printgate/netstack"
	"github.com/printgate/printgate/tunnel"
	"github.com/printgate/printgate/tunnel/tunneltest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// peerSet makes n valid peers with distinct keys and host routes in 10.64.0.0/10 and
// fd00:64::/64.
func peerSet(b testing.TB, n int) []tunnel.Peer {
	b.Helper()
	peers := make([]tunnel.Peer, n)
	for i := range peers {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			b.Fatal(err)
		}
		v4 := netip.AddrFrom4([4]byte{10, byte(64 + i>>16), byte(i >> 8), byte(i)})
		v6 := netip.MustParseAddr(fmt.Sprintf("fd00:64::%x", i+1))
		peers[i] = tunnel.Peer{
			PublicKey:    k.PublicKey(),
			PresharedKey: k, // any 32 bytes
			AllowedIPs:   []netip.Prefix{netip.PrefixFrom(v4, 32), netip.PrefixFrom(v6, 128)},
		}
	}
	return peers
}

func newDevice(b testing.TB) *tunnel.Device {
	b.Helper()
	st, err := netstack.New(netstack.Config{})
	if err != nil {
		b.Fatal(err)
	}
	k, _ := wgtypes.GeneratePrivateKey()
	d, err := tunnel.New(tunnel.Config{PrivateKey: k, TUN: st.TUN()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close(); st.Close() })
	return d
}

func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// BenchmarkApply1000 measures Apply on a 1,000-peer roster: "add" applies all 1,000 to an
// empty device (then removes them, untimed); "change-one" changes one peer among 1,000,
// which must cost a small fraction of "add". ns/peer and heap B/peer are reported for "add".
func BenchmarkApply1000(b *testing.B) {
	const n = 1000
	b.Run("add", func(b *testing.B) {
		d := newDevice(b)
		peers := peerSet(b, n)
		empty := heapInuse()
		var full uint64
		b.ReportAllocs()
		b.ResetTimer()
		var elapsed time.Duration
		for i := 0; i < b.N; i++ {
			start := time.Now()
			if err := d.Apply(peers); err != nil {
				b.Fatal(err)
			}
			elapsed += time.Since(start)
			b.StopTimer()
			if i == 0 {
				full = heapInuse()
			}
			if err := d.Apply(nil); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N*n), "ns/peer")
		if full > empty {
			b.ReportMetric(float64(full-empty)/n, "heapB/peer")
		}
	})
	b.Run("change-one", func(b *testing.B) {
		d := newDevice(b)
		peers := peerSet(b, n)
		if err := d.Apply(peers); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			peers[n/2].PersistentKeepalive = time.Duration(i%2) * 25 * time.Second
			if err := d.Apply(peers); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkThroughput pushes bytes through a tunneltest pair (two wireguard-go devices over
// loopback UDP, each on its own netstack) in one TCP connection: "upload" is client to
// gateway (a printer job upload), "download" gateway to client.
func BenchmarkThroughput(b *testing.B) {
	for _, dir := range []string{"upload", "download"} {
		b.Run(dir, func(b *testing.B) { benchTransfer(b, dir, netstack.Config{}) })
	}
}

// BenchmarkTUNTuning measures the gateway's outbound queue length on a download (gateway to
// client, the path it shapes) and the receive buffer bound on an upload. The TUN batch size
// is not varied: wireguard-go reads the TUN with max(bind, TUN) buffers, 128 on Linux.
// Memory is measured out of process, in bench/throughput.
func BenchmarkTUNTuning(b *testing.B) {
	for _, q := range []int{128, 512, 2048} {
		b.Run(fmt.Sprintf("download/queue=%d", q), func(b *testing.B) {
			benchTransfer(b, "download", netstack.Config{QueueSize: q})
		})
	}
	for _, r := range []int{256 << 10, 1 << 20, 4 << 20} {
		b.Run(fmt.Sprintf("upload/rcvbuf=%dKiB", r>>10), func(b *testing.B) {
			benchTransfer(b, "upload", netstack.Config{TCPReceiveBuffer: r})
		})
	}
}

func benchTransfer(b *testing.B, dir string, cfg netstack.Config) {
	{
		{
			gw, cl := tunneltest.NewPair(b, tunneltest.WithStackConfig(cfg))
			ln, err := gw.Stack.ListenTCP(netip.AddrPortFrom(gw.Addr4, 9))
			if err != nil {
				b.Fatal(err)
			}
			const chunk = 1 << 20
			total := int64(b.N) * chunk
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				if dir == "upload" {
					io.Copy(io.Discard, c)
				} else {
					io.CopyN(c, zeros{}, total)
				}
			}()
			c := dial(b, cl, netip.AddrPortFrom(gw.Addr4, 9))
			b.SetBytes(chunk)
			b.ResetTimer()
			if dir == "upload" {
				if _, err := io.CopyN(c, zeros{}, total); err != nil {
					b.Fatal(err)
				}
				c.(interface{ CloseWrite() error }).CloseWrite()
				wg.Wait() // the gateway has read everything
			} else if _, err := io.CopyN(io.Discard, c, total); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			c.Close()
			ln.Close()
			wg.Wait()
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

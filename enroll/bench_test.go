package enroll

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// BenchmarkEnroll is one enrollment: key pair, PSK and API key from crypto/rand, address
// allocation, and a crash-safe roster write (link, temp, fsync, rename, fsync dir).
func BenchmarkEnroll(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "state")
	if _, err := Init(dir, InitOptions{Endpoint: testEndpoint, Prefix4: netip.MustParsePrefix("10.0.0.0/16")}); err != nil {
		b.Fatal(err)
	}
	r, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := r.Enroll(Request{Name: "p" + strconv.Itoa(i)}); err != nil {
			b.Fatal(err)
		}
	}
}

// benchState writes a state directory holding n peers (a tenth of them revoked) straight to
// disk, without n enrollments.
func benchState(b *testing.B, n int) (string, []Peer) {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "state")
	g, err := Init(dir, InitOptions{Endpoint: testEndpoint, Prefix4: netip.MustParsePrefix("10.0.0.0/16")})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	peers := make([]Peer, n)
	off := uint32(firstDeviceOffset)
	for i := range peers {
		for !usableDevice(g.Prefix4, off) {
			off++
		}
		var seed [8]byte
		binary.BigEndian.PutUint64(seed[:], uint64(i))
		priv := wgtypes.Key(sha256.Sum256(append([]byte("priv"), seed[:]...)))
		psk := wgtypes.Key(sha256.Sum256(append([]byte("psk"), seed[:]...)))
		h := HashAPIKey(strconv.Itoa(i))
		peers[i] = Peer{
			Name: "peer-" + strconv.Itoa(i), Role: Operator, State: Active,
			PublicKey: priv.PublicKey(), PresharedKey: psk,
			IPv4: offsetAddr4(g.Prefix4, off), IPv6: offsetAddr6(g.Prefix6, off),
			APIKeyHash: h[:], Created: now, ExpiresAt: now.Add(DefaultTTL), FirstHandshake: now, LastHandshake: now,
			Endpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), uint16(40000+i)),
			RxBytes:  int64(i) * 1000, TxBytes: int64(i) * 2000,
		}
		if i%10 == 9 {
			peers[i].State, peers[i].RevokedAt = Revoked, now
		}
		off++
	}
	r, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	r.mu.Lock()
	err = r.commitLocked(peers, nil, off)
	r.mu.Unlock()
	if err != nil {
		b.Fatal(err)
	}
	r.Close()
	return dir, peers
}

// Benchmark1000Peers measures a 1,000-peer roster: loading it (Open: lock, verify, decode,
// validate, index), saving it (one crash-safe generation), WhoIs lookups, and the memory an
// open registry holds per peer.
func Benchmark1000Peers(b *testing.B) {
	const n = 1000
	dir, peers := benchState(b, n)

	b.Run("Load", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, err := Open(dir)
			if err != nil {
				b.Fatal(err)
			}
			r.Close()
		}
	})
	b.Run("Save", func(b *testing.B) {
		r, err := Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		b.ReportAllocs()
		for b.Loop() {
			r.mu.Lock()
			r.mu.dirty = true
			err := r.flushLocked()
			r.mu.Unlock()
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("WhoIs", func(b *testing.B) {
		r, err := Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			p := peers[i%n]
			if _, ok := r.WhoIs(p.IPv4); ok != (p.State == Active) {
				b.Fatalf("WhoIs(%v) = %v", p.IPv4, ok)
			}
			i++
		}
	})
	b.Run("DevicePeers", func(b *testing.B) {
		r, err := Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		b.ReportAllocs()
		for b.Loop() {
			if got := len(r.DevicePeers()); got != n-n/10 {
				b.Fatalf("DevicePeers = %d peers, want %d", got, n-n/10)
			}
		}
	})
	b.Run("Observe", func(b *testing.B) {
		// One poll of the device with every live peer's stats, as the daemon does each second.
		r, err := Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		var obs []Observation
		for _, p := range peers {
			if p.State == Active {
				obs = append(obs, Observation{PublicKey: p.PublicKey, Endpoint: p.Endpoint, LastHandshake: p.LastHandshake, Rx: p.RxBytes, Tx: p.TxBytes})
			}
		}
		now := time.Now()
		b.ReportAllocs()
		for b.Loop() {
			now = now.Add(time.Second)
			for i := range obs {
				obs[i].Rx++
			}
			if _, err := r.Observe(obs, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Memory", func(b *testing.B) {
		var per float64
		for b.Loop() {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			r, err := Open(dir)
			if err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			per = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
			runtime.KeepAlive(r)
			r.Close()
		}
		b.ReportMetric(per, "bytes/peer")
	})
}

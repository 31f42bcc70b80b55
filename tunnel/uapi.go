package tunnel

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// MaxPersistentKeepalive is the largest keepalive the UAPI accepts (a uint16 of seconds).
const MaxPersistentKeepalive = math.MaxUint16 * time.Second

// Validate checks a whole peer set as Apply does, without touching a device: keys are
// non-zero, unique and not the gateway's own (self; the zero key skips that check); every
// allowed IP is a host route (/32 or /128) held by exactly one peer; endpoints, if set, are
// unicast with a port; keepalives are whole seconds in [0, 65535 s].
func Validate(peers []Peer, self wgtypes.Key) error {
	return validate(peers, self, false)
}

// ValidateClient checks a client device's peer set: as Validate, except that allowed IPs may
// be prefixes of any length (a gateway routes a whole mesh prefix), which must not overlap
// between peers.
func ValidateClient(peers []Peer, self wgtypes.Key) error {
	return validate(peers, self, true)
}

func validate(peers []Peer, self wgtypes.Key, routes bool) error {
	if len(peers) > device.MaxPeers {
		return fmt.Errorf("%d peers exceed the maximum of %d", len(peers), device.MaxPeers)
	}
	keys := make(map[wgtypes.Key]int, len(peers))
	owner := make(map[netip.Addr]int, 2*len(peers))
	for i, p := range peers {
		if p.PublicKey == (wgtypes.Key{}) {
			return fmt.Errorf("peer %d: zero public key", i)
		}
		if self != (wgtypes.Key{}) && p.PublicKey == self {
			return fmt.Errorf("peer %d (%s): the gateway's own public key", i, p.PublicKey)
		}
		if j, dup := keys[p.PublicKey]; dup {
			return fmt.Errorf("peer %d (%s): duplicate public key of peer %d", i, p.PublicKey, j)
		}
		keys[p.PublicKey] = i
		if len(p.AllowedIPs) == 0 {
			return fmt.Errorf("peer %d (%s): no allowed IPs", i, p.PublicKey)
		}
		for _, pfx := range p.AllowedIPs {
			a := pfx.Addr()
			if !pfx.IsValid() || a.Zone() != "" || a.Is4In6() {
				return fmt.Errorf("peer %d (%s): invalid allowed IP %v", i, p.PublicKey, pfx)
			}
			if routes {
				if pfx != pfx.Masked() {
					return fmt.Errorf("peer %d (%s): allowed IP %v has host bits set", i, p.PublicKey, pfx)
				}
				for j, q := range peers[:i] {
					for _, other := range q.AllowedIPs {
						if pfx.Overlaps(other) {
							return fmt.Errorf("peer %d (%s): allowed IP %v overlaps peer %d", i, p.PublicKey, pfx, j)
						}
					}
				}
			} else if !pfx.IsSingleIP() {
				return fmt.Errorf("peer %d (%s): allowed IP %v is not a host route (/32 or /128)", i, p.PublicKey, pfx)
			}
			if pfx.IsSingleIP() && (a.IsUnspecified() || a.IsMulticast()) {
				return fmt.Errorf("peer %d (%s): allowed IP %v is not unicast", i, p.PublicKey, pfx)
			}
			if j, dup := owner[a]; dup {
				if j == i {
					return fmt.Errorf("peer %d (%s): duplicate allowed IP %v", i, p.PublicKey, pfx)
				}
				return fmt.Errorf("peer %d (%s): allowed IP %v overlaps peer %d", i, p.PublicKey, pfx, j)
			}
			owner[a] = i
		}
		if p.Endpoint != (netip.AddrPort{}) {
			e := p.Endpoint
			if !e.IsValid() || e.Port() == 0 || e.Addr().IsUnspecified() || e.Addr().IsMulticast() || e.Addr().Zone() != "" {
				return fmt.Errorf("peer %d (%s): invalid endpoint %v", i, p.PublicKey, e)
			}
		}
		ka := p.PersistentKeepalive
		if ka < 0 || ka > MaxPersistentKeepalive || ka%time.Second != 0 {
			return fmt.Errorf("peer %d (%s): persistent keepalive %v not whole seconds in [0, %v]", i, p.PublicKey, ka, MaxPersistentKeepalive)
		}
	}
	return nil
}

// samePeer reports whether two validated peers configure the device identically.
func samePeer(a, b Peer) bool {
	if a.PublicKey != b.PublicKey || a.PresharedKey != b.PresharedKey ||
		a.Endpoint != b.Endpoint || a.PersistentKeepalive != b.PersistentKeepalive ||
		len(a.AllowedIPs) != len(b.AllowedIPs) {
		return false
	}
	if slices.Equal(a.AllowedIPs, b.AllowedIPs) {
		return true
	}
	x, y := slices.Clone(a.AllowedIPs), slices.Clone(b.AllowedIPs)
	cmp := func(p, q netip.Prefix) int { return p.Addr().Compare(q.Addr()) }
	slices.SortFunc(x, cmp)
	slices.SortFunc(y, cmp)
	return slices.Equal(x, y)
}

type diffCount struct{ added, changed, removed int }

func (n diffCount) total() int { return n.added + n.changed + n.removed }

// diffUAPI renders the UAPI "set" text that turns prev into next: removals first (so an
// address that moves to a new peer is free), then changed peers (update_only), then new ones.
// Every value comes from a validated, typed field; nothing is copied from user text.
// It never emits replace_peers, which would reset every session.
func diffUAPI(prev, next map[wgtypes.Key]Peer) (string, diffCount) {
	var b strings.Builder
	var n diffCount
	for _, k := range sortedKeys(prev) {
		if _, ok := next[k]; !ok {
			fmt.Fprintf(&b, "public_key=%s\nremove=true\n", hexKey(k))
			n.removed++
		}
	}
	nextKeys := sortedKeys(next)
	for _, k := range nextKeys {
		p := next[k]
		if old, ok := prev[k]; ok {
			if samePeer(old, p) {
				continue
			}
			fmt.Fprintf(&b, "public_key=%s\nupdate_only=true\n", hexKey(k))
			writePeer(&b, p, old.Endpoint)
			n.changed++
		}
	}
	for _, k := range nextKeys {
		if _, ok := prev[k]; !ok {
			fmt.Fprintf(&b, "public_key=%s\n", hexKey(k))
			writePeer(&b, next[k], netip.AddrPort{})
			n.added++
		}
	}
	return b.String(), n
}

// writePeer writes a peer's settings after its public_key line. The endpoint is written only
// when the configured one changed, so a roaming peer's learned endpoint is kept.
func writePeer(b *strings.Builder, p Peer, oldEndpoint netip.AddrPort) {
	fmt.Fprintf(b, "preshared_key=%s\n", hexKey(p.PresharedKey))
	if p.Endpoint.IsValid() && p.Endpoint != oldEndpoint {
		fmt.Fprintf(b, "endpoint=%s\n", p.Endpoint)
	}
	fmt.Fprintf(b, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepalive/time.Second))
	b.WriteString("replace_allowed_ips=true\n")
	for _, pfx := range p.AllowedIPs {
		fmt.Fprintf(b, "allowed_ip=%s\n", pfx)
	}
}

func sortedKeys(m map[wgtypes.Key]Peer) []wgtypes.Key {
	keys := make([]wgtypes.Key, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b wgtypes.Key) int { return bytes.Compare(a[:], b[:]) })
	return keys
}

func hexKey(k wgtypes.Key) string { return hex.EncodeToString(k[:]) }

// ParseStats parses the reply of a UAPI "get" operation (wireguard-go's IpcGet, or what
// `wg show` reads over the socket) into per-peer stats. Device lines before the first
// public_key are skipped; unknown keys are ignored (the protocol may grow); malformed
// values are errors.
func ParseStats(r io.Reader) ([]PeerStats, error) {
	var (
		out       []PeerStats
		cur       *PeerStats
		sec, nsec int64
	)
	flush := func() {
		if cur == nil {
			return
		}
		if sec != 0 || nsec != 0 {
			cur.LastHandshake = time.Unix(sec, nsec)
		}
		out = append(out, *cur)
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break // end of the reply
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("parse stats: line %q: no '='", line)
		}
		if key == "public_key" {
			flush()
			k, err := parseHexKey(val)
			if err != nil {
				return nil, fmt.Errorf("parse stats: public_key: %w", err)
			}
			cur, sec, nsec = &PeerStats{PublicKey: k}, 0, 0
			continue
		}
		if cur == nil {
			if key == "errno" && val != "0" {
				return nil, fmt.Errorf("parse stats: device error errno=%s", val)
			}
			continue // device lines: private_key, listen_port, fwmark
		}
		var err error
		switch key {
		case "endpoint":
			cur.Endpoint, err = netip.ParseAddrPort(val)
		case "last_handshake_time_sec":
			sec, err = parseNonNeg(val)
		case "last_handshake_time_nsec":
			nsec, err = parseNonNeg(val)
			if err == nil && nsec >= int64(time.Second) {
				err = errors.New("out of range")
			}
		case "rx_bytes":
			cur.RxBytes, err = parseNonNeg(val)
		case "tx_bytes":
			cur.TxBytes, err = parseNonNeg(val)
		case "errno":
			if val != "0" {
				err = fmt.Errorf("device error errno=%s", val)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("parse stats: %s=%q: %w", key, val, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse stats: %w", err)
	}
	flush()
	return out, nil
}

func parseNonNeg(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, errors.New("negative")
	}
	return v, nil
}

func parseHexKey(s string) (wgtypes.Key, error) {
	var k wgtypes.Key
	if len(s) != 2*len(k) {
		return k, fmt.Errorf("key %q: want %d hex digits", s, 2*len(k))
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return k, fmt.Errorf("key %q: %w", s, err)
	}
	return k, nil
}

package enroll

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// This file reads a wg-quick config back: the inverse of RenderConfig, for `printgate connect`,
// which runs the device itself in userspace. It accepts any config wg-quick accepts for the
// lines a userspace client can use, ignores the lines only an interface has (hooks, table,
// fwmark), and rejects everything else by name, so a typo never passes silently.

// MaxConfigSize bounds a config file (and a QR's text) in bytes.
const MaxConfigSize = 64 << 10

// maxConfigPeers bounds the [Peer] sections of one config.
const maxConfigPeers = 64

// DeviceConfig is a parsed wg-quick config.
type DeviceConfig struct {
	// PrivateKey is the device's key.
	PrivateKey wgtypes.Key
	// Addresses are the device's own tunnel addresses (Address lines); at least one.
	Addresses []netip.Prefix
	// DNS servers from DNS lines; empty: none. Search domains are dropped.
	DNS []netip.Addr
	// MTU; zero: not given (the client's default).
	MTU int
	// ListenPort is the local UDP port; zero: any.
	ListenPort int
	// Peers in file order; at least one.
	Peers []ConfigPeer
}

// ConfigPeer is one [Peer] section.
type ConfigPeer struct {
	PublicKey wgtypes.Key
	// PresharedKey; the zero key means none.
	PresharedKey wgtypes.Key
	// AllowedIPs are the prefixes routed to this peer, canonical (masked).
	AllowedIPs []netip.Prefix
	// Endpoint is HOST:PORT as written (a name is resolved by the caller); empty: none.
	Endpoint string
	// PersistentKeepalive in seconds; zero: off.
	PersistentKeepalive int
}

// ParseConfig parses a wg-quick config. Keys are matched without case, as wg-quick does;
// '#' starts a comment.
func ParseConfig(b []byte) (DeviceConfig, error) {
	var c DeviceConfig
	if len(b) > MaxConfigSize {
		return c, fmt.Errorf("config: %d bytes, more than %d: %w", len(b), MaxConfigSize, ErrInvalid)
	}
	section := ""
	var havePriv bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), MaxConfigSize+1)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(strings.TrimPrefix(line, "\ufeff"))
		if line == "" {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("config line %d: %s: %w", n, fmt.Sprintf(format, args...), ErrInvalid)
		}
		if strings.HasPrefix(line, "[") {
			switch strings.ToLower(line) {
			case "[interface]":
				if section != "" {
					return c, bad("[Interface] must come once, first")
				}
				section = "interface"
			case "[peer]":
				if section == "" {
					return c, bad("[Peer] before [Interface]")
				}
				if len(c.Peers) == maxConfigPeers {
					return c, bad("more than %d peers", maxConfigPeers)
				}
				section = "peer"
				c.Peers = append(c.Peers, ConfigPeer{})
			default:
				return c, bad("unknown section %q", clipText(line, 40))
			}
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return c, bad("want KEY = VALUE")
		}
		key, val = strings.ToLower(strings.TrimSpace(key)), strings.TrimSpace(val)
		var err error
		switch section {
		case "":
			return c, bad("%q outside a section", clipText(key, 40))
		case "interface":
			err = c.setInterface(key, val, &havePriv)
		case "peer":
			err = c.Peers[len(c.Peers)-1].set(key, val)
		}
		if err != nil {
			return c, bad("%v", err)
		}
	}
	if err := sc.Err(); err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	switch {
	case section == "":
		return c, fmt.Errorf("config: no [Interface] section: %w", ErrInvalid)
	case !havePriv:
		return c, fmt.Errorf("config: [Interface] has no PrivateKey: %w", ErrInvalid)
	case len(c.Addresses) == 0:
		return c, fmt.Errorf("config: [Interface] has no Address: %w", ErrInvalid)
	case len(c.Peers) == 0:
		return c, fmt.Errorf("config: no [Peer] section: %w", ErrInvalid)
	}
	for i, p := range c.Peers {
		if p.PublicKey == (wgtypes.Key{}) {
			return c, fmt.Errorf("config: peer %d has no PublicKey: %w", i+1, ErrInvalid)
		}
	}
	return c, nil
}

func (c *DeviceConfig) setInterface(key, val string, havePriv *bool) error {
	switch key {
	case "privatekey":
		if *havePriv {
			return fmt.Errorf("PrivateKey given twice")
		}
		if val == PrivateKeyPlaceholder {
			return fmt.Errorf("PrivateKey is the placeholder %s: put your own private key there (the one whose public half was enrolled)", PrivateKeyPlaceholder)
		}
		k, err := parseKey(val)
		if err != nil {
			return fmt.Errorf("PrivateKey: %v", err)
		}
		c.PrivateKey, *havePriv = k, true
	case "address":
		for _, f := range splitList(val) {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				a, aerr := netip.ParseAddr(f)
				if aerr != nil {
					return fmt.Errorf("Address %q: not an address or prefix", clipText(f, 50))
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			if a := p.Addr(); a.Zone() != "" || a.Is4In6() || a.IsUnspecified() || a.IsMulticast() {
				return fmt.Errorf("Address %v: not a unicast address", p)
			}
			c.Addresses = append(c.Addresses, p)
		}
	case "dns":
		for _, f := range splitList(val) {
			if a, err := netip.ParseAddr(f); err == nil {
				c.DNS = append(c.DNS, a)
			} // a search domain: nothing for a userspace client to do with it
		}
	case "mtu":
		n, err := strconv.Atoi(val)
		if err != nil || n < 576 || n > 65535 {
			return fmt.Errorf("MTU %q: want 576-65535", clipText(val, 20))
		}
		c.MTU = n
	case "listenport":
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("ListenPort %q: want 0-65535", clipText(val, 20))
		}
		c.ListenPort = n
	case "table", "fwmark", "preup", "postup", "predown", "postdown", "saveconfig":
		// wg-quick's interface and routing hooks: a userspace client has neither.
	default:
		return fmt.Errorf("unknown [Interface] key %q", clipText(key, 40))
	}
	return nil
}

func (p *ConfigPeer) set(key, val string) error {
	switch key {
	case "publickey":
		k, err := parseKey(val)
		if err != nil {
			return fmt.Errorf("PublicKey: %v", err)
		}
		if k == (wgtypes.Key{}) {
			return fmt.Errorf("PublicKey is all zeros")
		}
		p.PublicKey = k
	case "presharedkey":
		k, err := parseKey(val)
		if err != nil {
			return fmt.Errorf("PresharedKey: %v", err)
		}
		p.PresharedKey = k
	case "allowedips":
		for _, f := range splitList(val) {
			pfx, err := netip.ParsePrefix(f)
			if err != nil {
				a, aerr := netip.ParseAddr(f)
				if aerr != nil {
					return fmt.Errorf("AllowedIPs %q: not a prefix", clipText(f, 50))
				}
				pfx = netip.PrefixFrom(a, a.BitLen())
			}
			if pfx.Addr().Zone() != "" || pfx.Addr().Is4In6() {
				return fmt.Errorf("AllowedIPs %v: not a plain prefix", pfx)
			}
			p.AllowedIPs = append(p.AllowedIPs, pfx.Masked())
		}
	case "endpoint":
		ep, err := ParseEndpoint(val, 51820)
		if err != nil || !strings.Contains(val, ":") {
			return fmt.Errorf("Endpoint %q: want HOST:PORT", clipText(val, 80))
		}
		p.Endpoint = ep
	case "persistentkeepalive":
		if strings.EqualFold(val, "off") {
			p.PersistentKeepalive = 0
			return nil
		}
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("PersistentKeepalive %q: want 0-65535 or off", clipText(val, 20))
		}
		p.PersistentKeepalive = n
	default:
		return fmt.Errorf("unknown [Peer] key %q", clipText(key, 40))
	}
	return nil
}

// parseKey parses a 32-byte key in standard base64, as wg(8) prints keys.
func parseKey(s string) (wgtypes.Key, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != wgtypes.KeyLen {
		return wgtypes.Key{}, fmt.Errorf("want 44 characters of base64 (a 32-byte key)")
	}
	return wgtypes.Key(b), nil
}

// splitList splits a comma-separated value, dropping empty entries.
func splitList(v string) []string {
	var out []string
	for f := range strings.SplitSeq(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// clipText shortens s for an error message (which quotes it).
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

package enroll

import (
	"net/netip"
	"strconv"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PrivateKeyPlaceholder stands in the PrivateKey line of a config for a device that brought
// its own key (--pubkey): the owner replaces it with the private key whose public half was
// enrolled. It is deliberately not base64, so wg-quick and both apps refuse the file with an
// error naming this line until it is filled in, instead of running with a wrong key.
const PrivateKeyPlaceholder = "REPLACE-WITH-YOUR-PRIVATE-KEY"

// Keepalive is the PersistentKeepalive written into device configs, in seconds: a phone behind
// NAT stays reachable and its handshake times stay fresh for `peers`.
const Keepalive = 25

// ConfigOptions are optional [Interface] lines; the zero value omits them all.
type ConfigOptions struct {
	DNS []netip.Addr // DNS servers for the device; empty: no DNS line
	MTU int          // zero: no MTU line (the apps pick their default)
}

// RenderConfig renders the wg-quick config for device p of gateway g. It holds only the keys
// both stock apps accept ([Interface] PrivateKey, Address, DNS, MTU; [Peer] PublicKey,
// PresharedKey, AllowedIPs, Endpoint, PersistentKeepalive), no comments, and a split tunnel:
// AllowedIPs are the mesh prefixes only. priv nil writes PrivateKeyPlaceholder.
func RenderConfig(g Gateway, p Peer, priv *wgtypes.Key, o ConfigOptions) string {
	var b strings.Builder
	b.WriteString("[Interface]\nPrivateKey = ")
	if priv != nil {
		b.WriteString(priv.String())
	} else {
		b.WriteString(PrivateKeyPlaceholder)
	}
	b.WriteString("\nAddress = ")
	b.WriteString(netip.PrefixFrom(p.IPv4, 32).String())
	if p.IPv6.IsValid() {
		b.WriteString(", ")
		b.WriteString(netip.PrefixFrom(p.IPv6, 128).String())
	}
	b.WriteByte('\n')
	if len(o.DNS) > 0 {
		b.WriteString("DNS = ")
		for i, a := range o.DNS {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(a.String())
		}
		b.WriteByte('\n')
	}
	if o.MTU > 0 {
		b.WriteString("MTU = " + strconv.Itoa(o.MTU) + "\n")
	}
	b.WriteString("\n[Peer]\nPublicKey = ")
	b.WriteString(g.PublicKey().String())
	if p.PresharedKey != (wgtypes.Key{}) {
		b.WriteString("\nPresharedKey = ")
		b.WriteString(p.PresharedKey.String())
	}
	b.WriteString("\nAllowedIPs = ")
	b.WriteString(g.Prefix4.String())
	if g.Prefix6.IsValid() {
		b.WriteString(", ")
		b.WriteString(g.Prefix6.String())
	}
	b.WriteString("\nEndpoint = ")
	b.WriteString(g.Endpoint)
	b.WriteString("\nPersistentKeepalive = " + strconv.Itoa(Keepalive) + "\n")
	return b.String()
}

package mesh

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"

	"golang.org/x/crypto/curve25519"
)

// A join token lets a new machine into the mesh (DESIGN.md "The mesh", Join). It carries a
// one-time WireGuard key pair whose public half the inviter holds pending (AddTokenCmd), and
// what the new machine needs to reach the inviter inside the tunnel with it: the inviter's
// public key (the mesh's key as the new machine first sees it), its endpoint outside the
// tunnel and its tunnel address. There the new machine registers its own key, endpoint and
// name; then the one-time peer dies.
//
// Text form: TokenPrefix, then unpadded base64url of
//
//	version     1 byte   (1)
//	expires     8 bytes  unix seconds, big endian
//	private key 32 bytes the one-time key pair's private half (the secret)
//	address     1+n      length (4 or 16), then the one-time peer's tunnel address
//	inviter key 32 bytes the inviter's WireGuard public key
//	inviter ip  1+n      length (4 or 16), then the inviter's tunnel address
//	endpoint    1+n      length (1 to 255), then HOST:PORT outside the tunnel
//	checksum    4 bytes  the first bytes of SHA-256 of everything before
//
// The checksum catches a token damaged in copying; it is no signature: whoever holds the
// token holds the secret, which is why it is one-time and short-lived.

// TokenPrefix starts every join token.
const TokenPrefix = "pgjoin1."

const tokenVersion = 1

// ErrToken marks a join token that does not parse.
var ErrToken = errors.New("bad join token")

// Token is a parsed join token.
type Token struct {
	Expires time.Time
	// PrivateKey is the one-time private key: a secret until the token is used.
	PrivateKey Key
	// Address is the one-time peer's tunnel address.
	Address         netip.Addr
	InviterKey      Key
	InviterAddr     netip.Addr
	InviterEndpoint string
}

// NewToken returns a token with a fresh one-time key pair from crypto/rand.
func NewToken(expires time.Time, addr netip.Addr, inviterKey Key, inviterAddr netip.Addr, endpoint string) (Token, error) {
	t := Token{Expires: expires.Truncate(time.Second), Address: addr, InviterKey: inviterKey, InviterAddr: inviterAddr, InviterEndpoint: endpoint}
	if _, err := rand.Read(t.PrivateKey[:]); err != nil {
		return Token{}, fmt.Errorf("join token key: %w", err)
	}
	// Clamp as Curve25519 private keys are (RFC 7748 §5; what `wg genkey` does).
	t.PrivateKey[0] &= 248
	t.PrivateKey[31] = t.PrivateKey[31]&127 | 64
	if err := t.check(); err != nil {
		return Token{}, err
	}
	return t, nil
}

// PublicKey is the one-time key pair's public half: it names the token in the roster.
func (t Token) PublicKey() Key {
	pub, err := curve25519.X25519(t.PrivateKey[:], curve25519.Basepoint)
	if err != nil {
		return Key{}
	}
	return Key(pub)
}

// Expired reports whether the token is past its expiry at now.
func (t Token) Expired(now time.Time) bool { return !now.Before(t.Expires) }

// String describes the token without its secret; Encode gives the token itself.
func (t Token) String() string {
	return fmt.Sprintf("join token for %s (%v), expires %s", t.InviterEndpoint, t.InviterAddr, t.Expires.UTC().Format(time.RFC3339))
}

// GoString redacts like String, for %#v.
func (t Token) GoString() string { return "mesh.Token{" + t.String() + "}" }

func (t Token) check() error {
	switch {
	case t.PrivateKey.IsZero():
		return fmt.Errorf("join token: one-time key is all zeros: %w", ErrToken)
	case t.InviterKey.IsZero():
		return fmt.Errorf("join token: inviter key is all zeros: %w", ErrToken)
	case !t.Address.IsValid() || t.Address.Zone() != "" || t.Address.Is4In6():
		return fmt.Errorf("join token: one-time address %v is not a plain IP address: %w", t.Address, ErrToken)
	case !t.InviterAddr.IsValid() || t.InviterAddr.Zone() != "" || t.InviterAddr.Is4In6():
		return fmt.Errorf("join token: inviter address %v is not a plain IP address: %w", t.InviterAddr, ErrToken)
	case t.InviterEndpoint == "" || len(t.InviterEndpoint) > 255:
		return fmt.Errorf("join token: inviter endpoint is %d bytes, want 1 to 255: %w", len(t.InviterEndpoint), ErrToken)
	case strings.IndexFunc(t.InviterEndpoint, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0:
		return fmt.Errorf("join token: inviter endpoint %q has a space or control character: %w", t.InviterEndpoint, ErrToken)
	case t.Expires.Unix() <= 0:
		return fmt.Errorf("join token: no expiry: %w", ErrToken)
	}
	return nil
}

// Encode returns the token's text form.
func (t Token) Encode() string {
	var b bytes.Buffer
	b.WriteByte(tokenVersion)
	binary.Write(&b, binary.BigEndian, uint64(t.Expires.Unix()))
	b.Write(t.PrivateKey[:])
	a := t.Address.AsSlice()
	b.WriteByte(byte(len(a)))
	b.Write(a)
	b.Write(t.InviterKey[:])
	a = t.InviterAddr.AsSlice()
	b.WriteByte(byte(len(a)))
	b.Write(a)
	b.WriteByte(byte(len(t.InviterEndpoint)))
	b.WriteString(t.InviterEndpoint)
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:4])
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b.Bytes())
}

// ParseToken parses a join token's text form. White space anywhere (a token wrapped or
// indented when copied) is ignored. It does not check expiry: see Expired.
func ParseToken(s string) (Token, error) {
	s = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
	if !strings.HasPrefix(s, TokenPrefix) {
		if strings.HasPrefix(s, "pgjoin") {
			return Token{}, fmt.Errorf("join token: format %q is not one this printgate reads (want %q; upgrade?): %w", strings.SplitN(s, ".", 2)[0], TokenPrefix, ErrToken)
		}
		return Token{}, fmt.Errorf("join token: does not start with %q (is it a device config or another tool's token?): %w", TokenPrefix, ErrToken)
	}
	body := s[len(TokenPrefix):]
	if i := strings.IndexFunc(body, func(r rune) bool {
		return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}); i >= 0 {
		return Token{}, fmt.Errorf("join token: character %q at %d is not base64url: %w", body[i], len(TokenPrefix)+i, ErrToken)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil {
		return Token{}, fmt.Errorf("join token: %d characters cannot be base64url (copied incompletely?): %w", len(body), ErrToken)
	}
	const minLen = 1 + 8 + 32 + 1 + 4 + 32 + 1 + 4 + 1 + 1 + 4
	if len(raw) < minLen {
		return Token{}, fmt.Errorf("join token: %d bytes, too short (copied incompletely?): %w", len(raw), ErrToken)
	}
	data, sum := raw[:len(raw)-4], raw[len(raw)-4:]
	if want := sha256.Sum256(data); !bytes.Equal(sum, want[:4]) {
		return Token{}, fmt.Errorf("join token: checksum mismatch (a character was changed, or the token was copied incompletely): %w", ErrToken)
	}
	if data[0] != tokenVersion {
		return Token{}, fmt.Errorf("join token: version %d, this printgate reads %d (upgrade?): %w", data[0], tokenVersion, ErrToken)
	}
	r := &tokenReader{b: data[1:]}
	var t Token
	t.Expires = time.Unix(int64(binary.BigEndian.Uint64(r.next(8))), 0).UTC()
	copy(t.PrivateKey[:], r.next(32))
	t.Address = r.addr()
	copy(t.InviterKey[:], r.next(32))
	t.InviterAddr = r.addr()
	t.InviterEndpoint = string(r.next(int(r.byte())))
	switch {
	case r.short:
		return Token{}, fmt.Errorf("join token: ends inside a field (copied incompletely?): %w", ErrToken)
	case len(r.b) > 0:
		return Token{}, fmt.Errorf("join token: %d bytes after the last field: %w", len(r.b), ErrToken)
	}
	if err := t.check(); err != nil {
		return Token{}, err
	}
	return t, nil
}

// tokenReader reads fields, remembering a short read instead of failing at each.
type tokenReader struct {
	b     []byte
	short bool
}

func (r *tokenReader) next(n int) []byte {
	if n > len(r.b) {
		r.short = true
		r.b = nil
		return make([]byte, n)
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *tokenReader) byte() byte { return r.next(1)[0] }

func (r *tokenReader) addr() netip.Addr {
	n := int(r.byte())
	if n != 4 && n != 16 {
		r.next(n)
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(r.next(n))
	return a
}

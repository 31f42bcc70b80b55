package mesh

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func testToken(t testing.TB) Token {
	t.Helper()
	tok, err := NewToken(t0.Add(15*time.Minute), netip.MustParseAddr("10.77.3.250"), newKey(t),
		netip.MustParseAddr("10.77.0.1"), "gw1.makerspace.example:51820")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenRoundTrip(t *testing.T) {
	tok := testToken(t)
	text := tok.Encode()
	if !strings.HasPrefix(text, TokenPrefix) {
		t.Fatalf("token %q lacks the prefix", text)
	}
	got, err := ParseToken(text)
	if err != nil {
		t.Fatalf("ParseToken(%q) = %v", text, err)
	}
	if got != tok {
		t.Errorf("ParseToken(Encode(t)) = %#v, want %#v", got, tok)
	}
	wrapped := "  " + text[:30] + "\n  " + text[30:] + "\r\n"
	if got, err := ParseToken(wrapped); err != nil || got != tok {
		t.Errorf("ParseToken of a wrapped copy = %v, %v", got, err)
	}
	v6 := tok
	v6.Address, v6.InviterAddr = netip.MustParseAddr("fd77::fa"), netip.MustParseAddr("fd77::1")
	if got, err := ParseToken(v6.Encode()); err != nil || got != v6 {
		t.Errorf("IPv6 token round trip = %v, %v", got, err)
	}
	if !tok.Expired(tok.Expires) || tok.Expired(tok.Expires.Add(-time.Second)) {
		t.Error("Expired is wrong at the edge")
	}
}

func TestTokenPublicKeyIsWireGuards(t *testing.T) {
	tok := testToken(t)
	want := wgtypes.Key(tok.PrivateKey).PublicKey()
	if got := tok.PublicKey(); got != Key(want) {
		t.Errorf("PublicKey() = %v, want %v (as wg pubkey derives it)", got, want)
	}
}

func TestTokenStringRedacts(t *testing.T) {
	tok := testToken(t)
	secret := base64.StdEncoding.EncodeToString(tok.PrivateKey[:])
	for _, s := range []string{tok.String(), fmt.Sprintf("%v", tok), fmt.Sprintf("%+v", tok), fmt.Sprintf("%#v", tok)} {
		if strings.Contains(s, secret) || strings.Contains(s, tok.Encode()[len(TokenPrefix):][:20]) {
			t.Errorf("printed token %q shows its secret", s)
		}
	}
}

// reseal re-encodes raw bytes with a fresh checksum.
func reseal(data []byte) string {
	sum := sha256.Sum256(data)
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(append(data, sum[:4]...))
}

func TestParseTokenErrors(t *testing.T) {
	tok := testToken(t)
	text := tok.Encode()
	raw, _ := base64.RawURLEncoding.DecodeString(text[len(TokenPrefix):])
	data := raw[:len(raw)-4]
	flip := []byte(text)
	i := len(TokenPrefix) + 20
	if flip[i] == 'A' {
		flip[i] = 'B'
	} else {
		flip[i] = 'A'
	}
	v2 := append([]byte{2}, data[1:]...)
	zeroKey := append([]byte{}, data...)
	copy(zeroKey[9:41], make([]byte, 32))
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "does not start with"},
		{"device config", "[Interface]\nPrivateKey = x", "does not start with"},
		{"future format", "pgjoin2.AAAA", `format "pgjoin2"`},
		{"bad character", text[:40] + "*" + text[41:], "not base64url"},
		{"truncated", text[:len(text)-1], "copied incompletely"},
		{"bytes lost", TokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:len(raw)-3]), "checksum mismatch"},
		{"very short", TokenPrefix + "AAAA", "too short"},
		{"changed character", string(flip), "checksum mismatch"},
		{"version", reseal(v2), "version 2"},
		{"trailing bytes", reseal(append(append([]byte{}, data...), 0)), "after the last field"},
		{"zero key", reseal(zeroKey), "all zeros"},
		{"field overrun", reseal(append([]byte{}, data[:len(data)-3]...)), "ends inside a field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseToken(tc.in)
			if err == nil || !errors.Is(err, ErrToken) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseToken(%.40q) = %v, want an ErrToken saying %q", tc.in, err, tc.want)
			}
		})
	}
}

func FuzzParseToken(f *testing.F) {
	tok := testToken(f)
	f.Add(tok.Encode())
	v6 := tok
	v6.Address, v6.InviterAddr = netip.MustParseAddr("fd77::fa"), netip.MustParseAddr("fd77::1")
	f.Add(v6.Encode())
	f.Add(TokenPrefix)
	f.Add("pgjoin1.AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrToken) {
				t.Fatalf("ParseToken(%q) = %v: not an ErrToken", s, err)
			}
			return
		}
		again, err := ParseToken(tok.Encode())
		if err != nil || again != tok {
			t.Fatalf("ParseToken(Encode(ParseToken(%q))) = %v, %v; want %v", s, again, err, tok)
		}
	})
}

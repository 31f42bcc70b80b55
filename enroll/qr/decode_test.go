package qr

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestDecodeRoundTrip(t *testing.T) {
	for name, text := range testTexts() {
		t.Run(name, func(t *testing.T) {
			c, err := Encode(text)
			if err != nil {
				t.Fatal(err)
			}
			png, err := c.PNG(0)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(bytes.NewReader(png))
			if err != nil {
				t.Fatalf("Decode(PNG(%q)) = %v", name, err)
			}
			if got != text {
				t.Errorf("Decode(PNG) = %q, want %q", got, text)
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":   nil,
		"not png": []byte("[Interface]\n"),
	} {
		if _, err := Decode(bytes.NewReader(b)); err == nil || !strings.HasPrefix(err.Error(), "qr: ") {
			t.Errorf("Decode(%s) = %v, want a qr: error", name, err)
		}
	}
}

// Every enrollment PNG decodes: the finder-pattern detector alone missed about 2 in 100 of
// these computer-made images (a connect that failed on a good QR); the pure-symbol reading
// behind it takes them all. 200 configs with fresh-looking keys, the same on every run.
func TestDecodeEnrollmentPNGs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	key := func() string {
		b := make([]byte, 32)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return base64.StdEncoding.EncodeToString(b)
	}
	failed := 0
	for i := range 200 {
		text := fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = 10.77.0.%d/32, fd62:4b05:c51f::%x/128\n\n"+
			"[Peer]\nPublicKey = %s\nPresharedKey = %s\nAllowedIPs = 10.77.0.0/22, fd62:4b05:c51f::/64\n"+
			"Endpoint = 192.168.1.20:51820\nPersistentKeepalive = 25\n", key(), 100+i%150, 100+i, key(), key())
		c, err := Encode(text)
		if err != nil {
			t.Fatal(err)
		}
		png, err := c.PNG(0)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := Decode(bytes.NewReader(png)); err != nil || got != text {
			failed++
			t.Errorf("config %d: Decode = %v (text equal: %v)", i, err, got == text)
		}
	}
	if failed > 0 {
		t.Errorf("%d of 200 enrollment PNGs did not decode", failed)
	}
}

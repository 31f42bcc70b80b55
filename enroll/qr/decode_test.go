package qr

import (
	"bytes"
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

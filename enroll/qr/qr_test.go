package qr

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/makiuchi-d/gozxing"
	zxqr "github.com/makiuchi-d/gozxing/qrcode"
)

// sampleConfig is a realistic one-peer config (362 bytes, like reference/wireguard.md §d).
const sampleConfig = `[Interface]
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
Address = 10.77.0.100/32, fd12:3456:789a::64/128

[Peer]
PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
PresharedKey = FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=
AllowedIPs = 10.77.0.0/22, fd12:3456:789a::/64
Endpoint = printgate.example.net:51820
PersistentKeepalive = 25
`

func decodeImage(t *testing.T, img image.Image) string {
	t.Helper()
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := zxqr.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_CHARACTER_SET: "UTF-8"})
	if err != nil {
		t.Fatalf("gozxing decode: %v", err)
	}
	return res.GetText()
}

func testTexts() map[string]string {
	r := rand.New(rand.NewPCG(1, 2))
	var long strings.Builder
	for long.Len() < MaxBytes {
		long.WriteByte(byte(' ' + r.IntN(95)))
	}
	return map[string]string{
		"config":  sampleConfig,
		"short":   "[Interface]\n",
		"maximum": long.String()[:MaxBytes],
	}
}

func TestPNGRoundTrip(t *testing.T) {
	for name, text := range testTexts() {
		t.Run(name, func(t *testing.T) {
			c, err := Encode(text)
			if err != nil {
				t.Fatalf("Encode(%d bytes) = %v", len(text), err)
			}
			if c.Version() > MaxVersion {
				t.Errorf("Version() = %d > MaxVersion %d", c.Version(), MaxVersion)
			}
			b, err := c.PNG(4)
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("png.Decode = %v", err)
			}
			if got := decodeImage(t, img); got != text {
				t.Errorf("PNG decodes to %q, want %q", got, text)
			}
		})
	}
}

func TestConfigVersionAndQuietZone(t *testing.T) {
	c, err := Encode(sampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	if c.Version() != 14 {
		t.Errorf("a one-peer config encodes at version %d, want 14 at ECC M", c.Version())
	}
	if got, want := c.Size(), 17+4*c.Version()+2*QuietZone; got != want {
		t.Errorf("Size() = %d, want %d", got, want)
	}
	n := c.Size()
	for i := 0; i < n; i++ {
		for q := 0; q < QuietZone; q++ {
			if c.Dark(i, q) || c.Dark(q, i) || c.Dark(i, n-1-q) || c.Dark(n-1-q, i) {
				t.Fatalf("quiet zone has a dark module near %d,%d", i, q)
			}
		}
	}
	// The finder pattern starts right inside the quiet zone.
	if !c.Dark(QuietZone, QuietZone) {
		t.Error("no finder pattern at the quiet zone's corner")
	}
}

func TestTooLarge(t *testing.T) {
	_, err := Encode(strings.Repeat("x", MaxBytes+1))
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "1025 bytes") {
		t.Errorf("Encode(%d bytes) = %v, want ErrTooLarge naming the size", MaxBytes+1, err)
	}
	if _, err := Encode(""); err == nil {
		t.Error("Encode(\"\") = nil error")
	}
	// Incompressible bytes at the limit still fit within MaxVersion.
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, MaxBytes)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	if c, err := Encode(string(b)); err != nil || c.Version() > MaxVersion {
		t.Errorf("Encode(%d random bytes) = %v", MaxBytes, err)
	}
}

// terminalModules reads a half-block rendering back into modules.
func terminalModules(t *testing.T, s string, colour bool) [][]bool {
	t.Helper()
	var rows [][]bool
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if colour {
			if !strings.HasPrefix(line, ansiColours) || !strings.HasSuffix(line, ansiReset) {
				t.Fatalf("line %q lacks the explicit colours or the reset", line)
			}
			line = strings.TrimSuffix(strings.TrimPrefix(line, ansiColours), ansiReset)
		}
		var top, bottom []bool
		for _, r := range line {
			switch r {
			case '█':
				top, bottom = append(top, true), append(bottom, true)
			case '▀':
				top, bottom = append(top, true), append(bottom, false)
			case '▄':
				top, bottom = append(top, false), append(bottom, true)
			case ' ':
				top, bottom = append(top, false), append(bottom, false)
			default:
				t.Fatalf("unexpected rune %q in terminal rendering", r)
			}
		}
		rows = append(rows, top, bottom)
	}
	return rows
}

func modulesImage(m [][]bool, n, scale int) image.Image {
	img := image.NewGray(image.Rect(0, 0, n*scale, n*scale))
	for y := 0; y < n*scale; y++ {
		for x := 0; x < n*scale; x++ {
			c := color.Gray{Y: 255}
			if m[y/scale][x/scale] {
				c.Y = 0
			}
			img.SetGray(x, y, c)
		}
	}
	return img
}

func TestTerminalRenderings(t *testing.T) {
	c, err := Encode(sampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	n := c.Size()
	for _, tc := range []struct {
		name   string
		text   string
		colour bool
	}{{"ansi", c.ANSI(), true}, {"plain", c.Plain(), false}} {
		t.Run(tc.name, func(t *testing.T) {
			rows := terminalModules(t, tc.text, tc.colour)
			if len(rows) != n+n%2 {
				t.Fatalf("%d module rows, want %d", len(rows), n+n%2)
			}
			for y := 0; y < n; y++ {
				if len(rows[y]) != n {
					t.Fatalf("row %d is %d columns wide, want %d", y, len(rows[y]), n)
				}
				for x := 0; x < n; x++ {
					if rows[y][x] != c.Dark(x, y) {
						t.Fatalf("module %d,%d = %v, want %v", x, y, rows[y][x], c.Dark(x, y))
					}
				}
			}
			// What the terminal shows decodes to the config.
			if got := decodeImage(t, modulesImage(rows, n, 4)); got != sampleConfig {
				t.Errorf("terminal rendering decodes to %q", got)
			}
		})
	}
}

func TestSVG(t *testing.T) {
	c, err := Encode(sampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	s := c.SVG()
	var doc struct {
		XMLName xml.Name `xml:"svg"`
		ViewBox string   `xml:"viewBox,attr"`
		Path    struct {
			D string `xml:"d,attr"`
		} `xml:"path"`
	}
	if err := xml.Unmarshal([]byte(s), &doc); err != nil {
		t.Fatalf("SVG is not XML: %v", err)
	}
	n := c.Size()
	if want := fmt.Sprintf("0 0 %d %d", n, n); doc.ViewBox != want {
		t.Errorf("viewBox = %q, want %q", doc.ViewBox, want)
	}
	m := make([][]bool, n)
	for i := range m {
		m[i] = make([]bool, n)
	}
	for _, seg := range strings.Split(strings.TrimSuffix(doc.Path.D, "z"), "z") {
		var x, y, w, w2 int
		if _, err := fmt.Sscanf(seg, "M%d %dh%dv1h-%d", &x, &y, &w, &w2); err != nil || w != w2 {
			t.Fatalf("path segment %q: %v", seg, err)
		}
		for i := 0; i < w; i++ {
			m[y][x+i] = true
		}
	}
	if got := decodeImage(t, modulesImage(m, n, 4)); got != sampleConfig {
		t.Errorf("SVG decodes to %q", got)
	}
}

func TestZbarimg(t *testing.T) {
	zbar, err := exec.LookPath("zbarimg")
	if err != nil {
		t.Skip("zbarimg not installed (Debian zbar-tools)")
	}
	for name, text := range map[string]string{"config": sampleConfig} {
		t.Run(name, func(t *testing.T) {
			c, err := Encode(text)
			if err != nil {
				t.Fatal(err)
			}
			b, err := c.PNG(0)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "qr.png")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(zbar, "--raw", "-q", path).Output()
			if err != nil {
				t.Fatalf("zbarimg = %v", err)
			}
			// zbarimg ends its output with one newline of its own.
			if got := strings.TrimSuffix(string(out), "\n"); got != text {
				t.Errorf("zbarimg decodes to %q, want %q", got, text)
			}
		})
	}
}

// FuzzEncode: any text is encoded within the limits and decodes back, or is refused.
func FuzzEncode(f *testing.F) {
	f.Add(sampleConfig)
	f.Add("0123456789")
	f.Add("\x00\xff\xfe")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := Encode(text)
		if err != nil {
			if text != "" && len(text) <= MaxBytes && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Encode(%q) = %v", text, err)
			}
			return
		}
		if len(text) > MaxBytes || c.Version() < 1 || c.Version() > MaxVersion {
			t.Fatalf("Encode(%d bytes) = version %d", len(text), c.Version())
		}
		if err := xml.Unmarshal([]byte(c.SVG()), new(struct{})); err != nil {
			t.Fatalf("SVG is not XML: %v", err)
		}
		b, err := c.PNG(2)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		bmp, _ := gozxing.NewBinaryBitmapFromImage(img)
		res, err := zxqr.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_CHARACTER_SET: "ISO-8859-1"})
		if err != nil {
			t.Fatalf("decode %q: %v", text, err)
		}
		ascii := true
		for i := 0; i < len(text); i++ {
			ascii = ascii && text[i] < 0x80
		}
		if ascii && res.GetText() != text {
			t.Fatalf("PNG decodes to %q, want %q", res.GetText(), text)
		}
	})
}

// TestWithQuietZone: the narrower rendering for an 80-column terminal keeps the symbol whole
// and still decodes.
func TestWithQuietZone(t *testing.T) {
	c, err := Encode(sampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []int{QuietZone, 3, 2} {
		n := c.WithQuietZone(q)
		if got, want := n.Size(), c.Size()-2*(QuietZone-q); got != want {
			t.Errorf("WithQuietZone(%d).Size() = %d, want %d", q, got, want)
		}
		if !n.Dark(q, q) || n.Dark(q-1, q-1) {
			t.Errorf("WithQuietZone(%d): the finder pattern does not start %d modules in", q, q)
		}
		b, err := n.PNG(4)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeImage(t, img); got != sampleConfig {
			t.Errorf("WithQuietZone(%d) decodes to %q", q, got)
		}
	}
}

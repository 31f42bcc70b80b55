// Package qr turns a device config into a QR code the stock WireGuard apps scan: terminal
// (ANSI and plain), PNG and SVG renderings of one symbol at error correction M.
package qr

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"strconv"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

// Limits. ECC M (15% recovery) keeps a one-peer config (about 360 bytes) at version 14, a
// 73-module symbol phones read from a screen at arm's length; ECC H would need version 20.
// Text longer than MaxBytes, or text that needs a version above MaxVersion (121 modules), is
// refused: such symbols are the ones users report as "won't scan" (wg-easy #2287, Firezone
// #1217), and a config that large means something is wrong with it.
const (
	MaxBytes   = 1024
	MaxVersion = 26
	// QuietZone is the light border, in modules, on every side (ISO/IEC 18004 asks for 4).
	QuietZone = 4
)

// ErrTooLarge is returned for text that would not make a QR code phones scan reliably.
var ErrTooLarge = errors.New("too large for a QR code that scans")

// Code is one encoded QR symbol with its quiet zone.
type Code struct {
	version int
	modules [][]bool // [y][x], true = dark, quiet zone included
}

// Encode encodes text at error correction M, refusing text over MaxBytes or above MaxVersion.
func Encode(text string) (*Code, error) {
	if text == "" {
		return nil, errors.New("qr: nothing to encode")
	}
	if len(text) > MaxBytes {
		return nil, fmt.Errorf("qr: text is %d bytes, at most %d fit a QR code that scans: %w", len(text), MaxBytes, ErrTooLarge)
	}
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return nil, fmt.Errorf("qr: %w", err)
	}
	if q.VersionNumber > MaxVersion {
		return nil, fmt.Errorf("qr: text needs version %d, at most %d scans reliably: %w", q.VersionNumber, MaxVersion, ErrTooLarge)
	}
	q.DisableBorder = true
	bm := q.Bitmap()
	n := len(bm) + 2*QuietZone
	c := &Code{version: q.VersionNumber, modules: make([][]bool, n)}
	for y := range c.modules {
		c.modules[y] = make([]bool, n)
	}
	for y, row := range bm {
		copy(c.modules[y+QuietZone][QuietZone:], row)
	}
	return c, nil
}

// Version is the QR version (1 to MaxVersion).
func (c *Code) Version() int { return c.version }

// Size is the symbol's width and height in modules, quiet zone included.
func (c *Code) Size() int { return len(c.modules) }

// Dark reports whether the module at x, y (quiet zone included) is dark.
func (c *Code) Dark(x, y int) bool {
	return y >= 0 && y < len(c.modules) && x >= 0 && x < len(c.modules) && c.modules[y][x]
}

// Explicit colours so the symbol is dark-on-light whatever the terminal's theme: first the
// 16-colour codes (black on bright white), then the 256-colour ones (palette entries 16 and
// 231 are the exact #000000 and #ffffff of the colour cube, which themes do not remap).
// Terminals that lack 256 colours ignore the second part.
const (
	ansiColours = "\x1b[30;107m\x1b[38;5;16;48;5;231m"
	ansiReset   = "\x1b[0m"
)

// ANSI renders the symbol for a terminal: two module rows per text line with half-block
// characters, black on white set explicitly, so it scans on dark and light terminals alike.
// Each line is Size() columns wide.
func (c *Code) ANSI() string { return c.halfBlocks(ansiColours, ansiReset) }

// Plain renders like ANSI without colour codes: dark modules are drawn in the terminal's
// text colour, so it scans only where text is dark on a light background (a file, paper).
func (c *Code) Plain() string { return c.halfBlocks("", "") }

func (c *Code) halfBlocks(pre, post string) string {
	var b strings.Builder
	n := len(c.modules)
	for y := 0; y < n; y += 2 {
		b.WriteString(pre)
		for x := 0; x < n; x++ {
			top, bottom := c.modules[y][x], y+1 < n && c.modules[y+1][x]
			switch {
			case top && bottom:
				b.WriteRune('█')
			case top:
				b.WriteRune('▀')
			case bottom:
				b.WriteRune('▄')
			default:
				b.WriteByte(' ')
			}
		}
		b.WriteString(post)
		b.WriteByte('\n')
	}
	return b.String()
}

// PNG renders the symbol as a black-and-white PNG with scale pixels per module (zero: 8).
func (c *Code) PNG(scale int) ([]byte, error) {
	if scale <= 0 {
		scale = 8
	}
	if scale > 64 {
		return nil, fmt.Errorf("qr: png scale %d: at most 64 pixels per module", scale)
	}
	n := len(c.modules) * scale
	img := image.NewPaletted(image.Rect(0, 0, n, n), color.Palette{color.White, color.Black})
	for y := 0; y < n; y++ {
		row := c.modules[y/scale]
		for x := 0; x < n; x++ {
			if row[x/scale] {
				img.Pix[y*img.Stride+x] = 1
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("qr: png: %w", err)
	}
	return buf.Bytes(), nil
}

// SVG renders the symbol as a standalone SVG: a white square and one path of dark modules,
// one unit per module, crisp at any size.
func (c *Code) SVG() string {
	n := strconv.Itoa(len(c.modules))
	var b strings.Builder
	b.WriteString(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ` + n + " " + n +
		`" width="` + strconv.Itoa(len(c.modules)*8) + `" height="` + strconv.Itoa(len(c.modules)*8) +
		`" shape-rendering="crispEdges">` +
		`<rect width="` + n + `" height="` + n + `" fill="#fff"/><path fill="#000" d="`)
	for y, row := range c.modules {
		for x := 0; x < len(row); {
			if !row[x] {
				x++
				continue
			}
			run := 1
			for x+run < len(row) && row[x+run] {
				run++
			}
			fmt.Fprintf(&b, "M%d %dh%dv1h-%dz", x, y, run, run)
			x += run
		}
	}
	b.WriteString(`"/></svg>` + "\n")
	return b.String()
}

// WithQuietZone returns the symbol with a light border of n modules (0 to QuietZone) instead
// of QuietZone: a smaller rendering for a narrow terminal. Scanners read a border of 2 modules
// in practice, though ISO/IEC 18004 asks for 4.
func (c *Code) WithQuietZone(n int) *Code {
	n = max(0, min(n, QuietZone))
	cut := QuietZone - n
	size := len(c.modules) - 2*cut
	t := &Code{version: c.version, modules: make([][]bool, size)}
	for y := range t.modules {
		t.modules[y] = append([]bool(nil), c.modules[y+cut][cut:cut+size]...)
	}
	return t
}

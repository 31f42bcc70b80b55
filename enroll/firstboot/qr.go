package firstboot

import (
	"fmt"
	"strings"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/printgate/printgate/enroll/qr"
)

// maxConsoleWidth keeps the terminal QR inside an 80-column serial console.
const maxConsoleWidth = 80

// encode picks the highest error correction whose symbol (with its quiet zone) still fits
// the console width.
func encode(text string) (*qrcode.QRCode, error) {
	var q *qrcode.QRCode
	var err error
	for _, level := range []qrcode.RecoveryLevel{qrcode.Medium, qrcode.Low} {
		q, err = qrcode.New(text, level)
		if err != nil {
			return nil, fmt.Errorf("encode qr: %w", err)
		}
		if len(q.Bitmap()) <= maxConsoleWidth {
			break
		}
	}
	return q, nil
}

// HalfBlockQR renders text as a QR for a light-on-dark text console (the Linux VT, a serial
// terminal): two modules per character cell, top and bottom, drawn with the half blocks
// U+2580 ▀ and U+2584 ▄, the full block U+2588 █ and space. A drawn (lit) half is a LIGHT
// module, so on a dark screen the code shows the right way round; the quiet zone is lit. Each
// line is exactly as wide as the symbol, so a log of it converts back into an image.
//
// It differs from enroll/qr's terminal renderings on purpose: those draw dark modules and set
// black-on-white colours, which a serial log keeps as escape codes on every line and an
// 80-column console cannot fit for a version-14 symbol; this one needs no colour support and
// drops to error correction L when M would be wider than 80 columns.
func HalfBlockQR(text string) (string, error) {
	q, err := encode(text)
	if err != nil {
		return "", err
	}
	return halfBlocks(q.Bitmap()), nil
}

// halfBlocks draws a bitmap (true = dark module) as described at HalfBlockQR.
func halfBlocks(bits [][]bool) string {
	var b strings.Builder
	for y := 0; y < len(bits); y += 2 {
		for x := range bits[y] {
			topLight := !bits[y][x]
			bottomLight := y+1 >= len(bits) || !bits[y+1][x] // past the end: quiet zone
			switch {
			case topLight && bottomLight:
				b.WriteString("█")
			case topLight:
				b.WriteString("▀")
			case bottomLight:
				b.WriteString("▄")
			default:
				b.WriteString(" ")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// PNGQR renders text as a PNG QR with enroll/qr (error correction M, the product's size
// limits), dark modules on white, 8 pixels per module.
func PNGQR(text string) ([]byte, error) {
	c, err := qr.Encode(text)
	if err != nil {
		return nil, fmt.Errorf("encode qr: %w", err)
	}
	png, err := c.PNG(8)
	if err != nil {
		return nil, fmt.Errorf("encode png: %w", err)
	}
	return png, nil
}

package qr

import (
	"bytes"
	"fmt"
	"image"
	_ "image/jpeg" // a QR sent as a photo
	_ "image/png"
	"io"

	"github.com/makiuchi-d/gozxing"
	zxqr "github.com/makiuchi-d/gozxing/qrcode"
)

// maxImageBytes bounds an image file Decode reads.
const maxImageBytes = 32 << 20

// maxImagePixels bounds the decoded image (width × height) so a small file cannot ask for a
// huge bitmap.
const maxImagePixels = 40 << 20

// Decode reads a PNG (or JPEG) image holding one QR code and returns its text: what
// `printgate connect --qr-png` does with the QR image a laptop user was sent.
func Decode(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxImageBytes+1))
	if err != nil {
		return "", fmt.Errorf("qr: read image: %w", err)
	}
	if len(b) > maxImageBytes {
		return "", fmt.Errorf("qr: image larger than %d bytes", maxImageBytes)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return "", fmt.Errorf("qr: decode image: %w", err)
	}
	if cfg.Width*cfg.Height > maxImagePixels {
		return "", fmt.Errorf("qr: image %dx%d too large", cfg.Width, cfg.Height)
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return "", fmt.Errorf("qr: decode image: %w", err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		return "", fmt.Errorf("qr: %w", err)
	}
	hints := map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_CHARACTER_SET: "UTF-8"}
	res, err := zxqr.NewQRCodeReader().Decode(bmp, hints)
	if err != nil {
		// A photo or a small symbol in a large picture: try harder before giving up.
		hints[gozxing.DecodeHintType_TRY_HARDER] = true
		res, err = zxqr.NewQRCodeReader().Decode(bmp, hints)
	}
	if err != nil {
		// A clean, computer-made image (the PNG `printgate enroll --png` writes): the
		// detector's finder-pattern search misjudges about 2 in 100 of those; reading the
		// grid straight from the symbol's bounds does not.
		pure := map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_CHARACTER_SET: "UTF-8", gozxing.DecodeHintType_PURE_BARCODE: true}
		if r, perr := zxqr.NewQRCodeReader().Decode(bmp, pure); perr == nil {
			res, err = r, nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("qr: no QR code found in the image: %w", err)
	}
	return res.GetText(), nil
}

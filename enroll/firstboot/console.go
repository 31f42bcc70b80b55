package firstboot

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"strings"
)

// ConsoleImage finds the last complete QR between BeginMarker and EndMarker in a console or
// serial log and draws it as a grayscale image (dark modules black, scale pixels per module,
// with a white margin), for a QR decoder such as zbarimg. Lines inside the block that are not
// made of QR characters (a kernel message, stray escape sequences) are skipped; a block whose
// QR lines differ in width is an error.
func ConsoleImage(log string, scale int) (*image.Gray, error) {
	if scale < 1 || scale > 64 {
		return nil, fmt.Errorf("console image: scale %d out of 1..64", scale)
	}
	lines := strings.Split(log, "\n")
	end := -1
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], EndMarker) {
			end = i
			continue
		}
		if end >= 0 && strings.Contains(lines[i], BeginMarker) {
			return drawBlock(lines[i+1:end], scale)
		}
	}
	return nil, errors.New("console image: no complete QR block between the markers")
}

// maxConsoleQRWidth bounds a QR line: version 40 is 177 modules plus the quiet zone.
const maxConsoleQRWidth = 200

func drawBlock(lines []string, scale int) (*image.Gray, error) {
	var rows [][]rune
	for _, l := range lines {
		l = strings.TrimRight(l, "\r")
		if l == "" || strings.Trim(l, " █▀▄") != "" {
			continue
		}
		r := []rune(l)
		if len(r) > maxConsoleQRWidth {
			return nil, fmt.Errorf("console image: QR line %d is %d wide, at most %d", len(rows)+1, len(r), maxConsoleQRWidth)
		}
		if len(rows) > 0 && len(r) != len(rows[0]) {
			// A console may drop trailing spaces; all-dark cells at the end are padded back.
			if len(r) > len(rows[0]) {
				return nil, fmt.Errorf("console image: QR line %d is %d wide, want %d", len(rows)+1, len(r), len(rows[0]))
			}
			r = append(r, []rune(strings.Repeat(" ", len(rows[0])-len(r)))...)
		}
		rows = append(rows, r)
		if len(rows) > maxConsoleQRWidth/2+1 {
			return nil, errors.New("console image: QR block too tall")
		}
	}
	if len(rows) == 0 {
		return nil, errors.New("console image: no QR lines in the block")
	}
	const margin = 4 // modules of extra white around the symbol's own quiet zone
	w, h := len(rows[0]), 2*len(rows)
	img := image.NewGray(image.Rect(0, 0, (w+2*margin)*scale, (h+2*margin)*scale))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	set := func(x, y int) {
		for dy := 0; dy < scale; dy++ {
			for dx := 0; dx < scale; dx++ {
				img.SetGray((x+margin)*scale+dx, (y+margin)*scale+dy, color.Gray{})
			}
		}
	}
	for y, row := range rows {
		for x, c := range row {
			topDark, bottomDark := false, false
			switch c {
			case ' ':
				topDark, bottomDark = true, true
			case '▀':
				bottomDark = true
			case '▄':
				topDark = true
			}
			if topDark {
				set(x, 2*y)
			}
			if bottomDark {
				set(x, 2*y+1)
			}
		}
	}
	return img, nil
}

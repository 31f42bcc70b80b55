// Command qrconsole turns the last admin QR printed on a console (a qemu serial log) back into
// a PNG image that zbarimg can decode.
//
//	cd deploy && go run ./image/qrconsole [-scale 6] serial.log qr.png
package main

import (
	"flag"
	"fmt"
	"image/png"
	"os"

	"github.com/printgate/printgate/enroll/firstboot"
)

func main() {
	scale := flag.Int("scale", 6, "pixels per QR module")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: qrconsole [-scale N] LOG OUT.png\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), flag.Arg(1), *scale); err != nil {
		fmt.Fprintf(os.Stderr, "qrconsole: %v\n", err)
		os.Exit(1)
	}
}

func run(logPath, out string, scale int) error {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return err
	}
	img, err := firstboot.ConsoleImage(string(b), scale)
	if err != nil {
		return fmt.Errorf("%s: %w", logPath, err)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

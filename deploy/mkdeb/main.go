// Command mkdeb builds printgate's Debian package for one architecture with the nfpm library.
//
//	cd deploy && go run ./mkdeb -arch arm64 -version 0.1.0 -bin ../dist/printgate_linux_arm64 [-doc ../docs/appliance.md] [-o ../dist]
//
// It prints the path of the .deb it wrote.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/printgate/printgate/deploy/debian"
)

func main() {
	var o debian.Options
	flag.StringVar(&o.Arch, "arch", "", "Go architecture: amd64, arm64, arm6 or arm7 (both armhf)")
	flag.StringVar(&o.Version, "version", "", "package version (a leading v is dropped)")
	flag.StringVar(&o.Binary, "bin", "", "printgate binary built for -arch")
	flag.StringVar(&o.Doc, "doc", "", "optional docs/appliance.md to install under /usr/share/doc/printgate")
	flag.StringVar(&o.Maintainer, "maintainer", "", "Maintainer field (default "+debian.DefaultMaintainer+")")
	out := flag.String("o", "dist", "output directory")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "mkdeb: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	path, err := run(o, *out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkdeb: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(path)
}

func run(o debian.Options, out string) (string, error) {
	name, err := debian.FileName(o)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := debian.Build(&buf, o); err != nil {
		return "", err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(out, name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return path, nil
}

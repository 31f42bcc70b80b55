// Command printgate is a WireGuard access gateway for 3D printers; see printgate --help.
package main

import (
	"os"

	"github.com/printgate/printgate/cmd/printgate/cli"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Command printgate is a WireGuard access gateway for 3D printers; see printgate --help.
package main

import (
	"os"
)

func main() {
	os.Exit(1)
}

//go:build !unix

package cli

import "io"

// terminalColumns returns 0 (unknown): the width then comes from $COLUMNS or defaults to 80.
func terminalColumns(io.Writer) int { return 0 }

//go:build !linux

package files

import "os"

const (
	directFlag  = 0 // no O_DIRECT: uploads go through the page cache
	directAlign = 4096
)

// diskWriter writes an upload's chunks; the fsync at the end makes them durable.
type diskWriter struct{ f *os.File }

func newDiskWriter(f *os.File) *diskWriter { return &diskWriter{f: f} }

func (w *diskWriter) write(b []byte) error {
	_, err := w.f.Write(b)
	return err
}

func readAhead(*os.File) {}

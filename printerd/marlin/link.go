package marlin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.bug.st/serial"
)

// This file is the serial link: opening a port (a USB serial device or a pty, the same way),
// listing ports by their stable names, reading lines, and the reconnect back-off.

// DefaultBaud is Marlin's default BAUDRATE.
const DefaultBaud = 250000

// PortInfo is one serial port a printer may be on.
type PortInfo struct {
	// Path is the name to configure: a stable /dev/serial/by-id/... link when there is one.
	Path string `json:"path"`
	// Target is the device the link points to now (/dev/ttyACM0); equal to Path otherwise.
	Target string `json:"target"`
}

// ListPorts lists the serial ports of this machine, stable /dev/serial/by-id names first (they
// survive re-plugging, unlike /dev/ttyACM0), then the ports that have no such name.
func ListPorts() ([]PortInfo, error) {
	return listPorts("/dev/serial/by-id", serial.GetPortsList)
}

func listPorts(byID string, others func() ([]string, error)) ([]PortInfo, error) {
	var out []PortInfo
	seen := map[string]bool{}
	entries, err := os.ReadDir(byID)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list ports %s: %w", byID, err)
	}
	for _, e := range entries {
		p := filepath.Join(byID, e.Name())
		target, err := filepath.EvalSymlinks(p)
		if err != nil {
			continue // a dangling link: the device is gone
		}
		out = append(out, PortInfo{Path: p, Target: target})
		seen[target] = true
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	names, err := others()
	if err != nil {
		return out, fmt.Errorf("list ports: %w", err)
	}
	sort.Strings(names)
	for _, n := range names {
		if t, err := filepath.EvalSymlinks(n); err == nil && seen[t] {
			continue
		}
		if seen[n] {
			continue
		}
		out = append(out, PortInfo{Path: n, Target: n})
	}
	return out, nil
}

// openSerial opens path at baud with go.bug.st/serial. A pty's slave side opens the same way.
func openSerial(ctx context.Context, path string, baud int) (io.ReadWriteCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open serial %s: %w", path, err)
	}
	p, err := serial.Open(path, &serial.Mode{BaudRate: baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		return nil, fmt.Errorf("open serial %s: %w", path, err)
	}
	return p, nil
}

// maxReplyBytes bounds one firmware line; longer lines are cut (a noisy link can drop the
// newline, and M115 lines are long but well below this).
const maxReplyBytes = 4096

// readLines reads lines from r into lines until r fails, then sends the error on errc and
// closes lines. It is the session's reader goroutine; closing r ends it.
func readLines(r io.Reader, lines chan<- string, errc chan<- error) {
	defer close(lines)
	br := bufio.NewReaderSize(r, maxReplyBytes)
	for {
		b, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			lines <- string(b)
			// Skip the rest of the overlong line.
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			if err == nil {
				continue
			}
		}
		if err != nil {
			if len(b) > 0 && err == io.EOF {
				lines <- string(b)
			}
			errc <- err
			return
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			continue
		}
		lines <- s
	}
}

// backoff is the reconnect delay: it doubles from first up to max, and a link that stayed up
// resets it.
type backoff struct {
	first, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.first
	} else {
		b.cur *= 2
	}
	if b.cur > b.max {
		b.cur = b.max
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }

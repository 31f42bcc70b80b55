package policy

import (
	"bufio"
	"context"
	"fmt"
	"io"
)

// checkFileRef is CheckFile as it was before the fast path (one string and one FileLine per
// line, through bufio): the reference FuzzFileCheck holds FileCheck against.
func checkFileRef(p *Policy, ctx context.Context, r io.Reader) error {
	br := bufio.NewReaderSize(r, 32<<10)
	for n := 1; ; n++ {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("check file: line %d: %w", n, err)
			}
		}
		line, err := readLineRef(br)
		if len(line) > MaxFileLineBytes {
			return &Refusal{Rule: RuleMaxFileLine, Line: n, Reason: fmt.Sprintf("line is longer than %d bytes", MaxFileLineBytes)}
		}
		if len(line) > 0 {
			if cerr := p.FileLine(n, line); cerr != nil {
				return cerr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("check file: line %d: %w", n, err)
		}
	}
}

// readLineRef returns the next line without its "\n", stopping early once it is longer than
// MaxFileLineBytes. err is io.EOF at the end of input.
func readLineRef(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, err := br.ReadSlice('\n')
		b = append(b, chunk...)
		if len(b) > MaxFileLineBytes {
			return string(b), nil
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err != nil:
			return string(b), err
		}
		return string(b[:len(b)-1]), nil
	}
}

// Package formdata reads multipart/form-data bodies part by part, as mime/multipart does, but
// hands a large part's bytes over with one copy: from the connection into the caller's buffer.
//
// mime/multipart reads everything through a 4 KiB buffer, copies every byte out of it again,
// and scans each 4 KiB backwards for a '\r' that G-code from Linux slicers never has: a sixth
// of the upload path's CPU beyond the tunnel (issue 14). Reader keeps mime/multipart's grammar
// (the same boundary lines, preamble, "\n"-only bodies, quoted-printable parts, and
// net/textproto for the part headers) and differs only in how it buffers:
//
//  1. Boundary lines and part headers are read from a read-ahead buffer of readAhead bytes.
//  2. Part.Read, when the buffer holds no more than what might start a delimiter and the
//     caller's buffer is large, moves those few bytes to the front of the caller's buffer,
//     reads from the source straight behind them, and searches the result for the delimiter.
//     What belongs after the part (or might) goes back into the read-ahead buffer.
//  3. Where the part ends is decided by the rule mime/multipart's scanUntilBoundary uses, so
//     any cut of the body into reads gives the same parts.
//
// Limits: part headers of at most MaxHeaderBytes (mime/multipart: 10 MiB and 10,000 headers)
// and a boundary of at most MaxBoundary bytes (RFC 2046: 70). FuzzReader holds Reader to
// mime/multipart on arbitrary bodies cut into arbitrary reads.
package formdata

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"net/textproto"
	"strings"
)

const (
	// MaxHeaderBytes caps one part's header block, its blank line included.
	MaxHeaderBytes = 16 << 10
	// MaxBoundary caps the boundary parameter.
	MaxBoundary = 256
	// readAhead is the read-ahead buffer; also the most a direct read asks of the source.
	readAhead = 64 << 10
	// lineLimit is the longest boundary or preamble line mime/multipart reads (its bufio
	// buffer): a longer one fails NextPart there, so it does here.
	lineLimit = 4096
)

// ErrHeaderTooLarge is returned by NextPart for a part header block over MaxHeaderBytes.
var ErrHeaderTooLarge = errors.New("multipart: part header larger than 16 KiB")

// Reader reads the parts of one multipart body. It is not safe for concurrent use.
type Reader struct {
	src  io.Reader
	buf  []byte // read-ahead: buf[r:w] is read from src and not yet consumed
	r, w int
	err  error // src's first error (io.EOF at its end); sticky

	nl               []byte // "\r\n", or "\n" once the first boundary line ends in "\n"
	nlDashBoundary   []byte // nl + "--" + boundary: the delimiter inside a body
	dashBoundary     []byte // "--" + boundary
	dashBoundaryDash []byte // "--" + boundary + "--"
	partsRead        int
	cur              *Part
}

// NewReader reads the body r with the given boundary (from the Content-Type).
func NewReader(r io.Reader, boundary string) (*Reader, error) {
	if len(boundary) > MaxBoundary {
		return nil, fmt.Errorf("multipart: boundary longer than %d bytes", MaxBoundary)
	}
	b := []byte("\r\n--" + boundary + "--")
	return &Reader{
		src:              r,
		buf:              make([]byte, readAhead),
		nl:               b[:2],
		nlDashBoundary:   b[:len(b)-2],
		dashBoundaryDash: b[2:],
		dashBoundary:     b[2 : len(b)-2],
	}, nil
}

// Part is one part of the body. Header is as net/textproto reads it; a quoted-printable part
// is decoded and its Content-Transfer-Encoding header dropped, as mime/multipart does.
type Part struct {
	Header textproto.MIMEHeader

	mr    *Reader
	qp    io.Reader // the decoder of a quoted-printable part; nil otherwise
	total int64     // bytes of the part returned so far
	n     int       // bytes at mr.buf[mr.r:] known to be the part's
	err   error     // the part's end (io.EOF) or failure, once n bytes are consumed
}

// fill reads more of src into the read-ahead buffer; false once src has failed or ended.
func (mr *Reader) fill() bool {
	if mr.err != nil {
		return false
	}
	if mr.r > 0 && (mr.r == mr.w || mr.w == len(mr.buf)) {
		mr.w = copy(mr.buf, mr.buf[mr.r:mr.w])
		mr.r = 0
	}
	if mr.w == len(mr.buf) {
		return true // full: the caller decides what that means
	}
	for range 100 {
		n, err := mr.src.Read(mr.buf[mr.w:])
		mr.w += n
		if err != nil {
			mr.err = err
		}
		if n > 0 || err != nil {
			return n > 0
		}
	}
	mr.err = io.ErrNoProgress
	return false
}

// line returns the next line, '\n' included, consuming it. At the end of src it returns the
// rest and src's error.
func (mr *Reader) line() ([]byte, error) {
	for seen := 0; ; { // no '\n' in the first seen bytes
		if i := bytes.IndexByte(mr.buf[mr.r+seen:mr.w], '\n'); i >= 0 && seen+i < lineLimit {
			l := mr.buf[mr.r : mr.r+seen+i+1]
			mr.r += seen + i + 1
			return l, nil
		}
		if seen = mr.w - mr.r; seen >= lineLimit {
			return nil, bufio.ErrBufferFull
		}
		if !mr.fill() {
			l := mr.buf[mr.r:mr.w]
			mr.r = mr.w
			return l, mr.err
		}
	}
}

// NextPart returns the next part, or io.EOF after the last. The part before it is skipped
// to its end.
func (mr *Reader) NextPart() (*Part, error) {
	if mr.cur != nil {
		io.Copy(io.Discard, mr.cur)
		mr.cur = nil
	}
	if string(mr.dashBoundary) == "--" {
		return nil, errors.New("multipart: boundary is empty")
	}
	expectNewPart := false
	for {
		line, err := mr.line()
		if err == io.EOF && mr.isFinalBoundary(line) {
			return nil, io.EOF // "--boundary--" without a line end at the very end
		}
		if err != nil {
			return nil, fmt.Errorf("multipart: NextPart: %w", err)
		}
		if mr.isBoundaryDelimiterLine(line) {
			mr.partsRead++
			p, err := mr.newPart()
			if err != nil {
				return nil, err
			}
			mr.cur = p
			return p, nil
		}
		if mr.isFinalBoundary(line) {
			return nil, io.EOF
		}
		if expectNewPart {
			return nil, fmt.Errorf("multipart: expecting a new Part; got line %q", string(line))
		}
		if mr.partsRead == 0 {
			continue // preamble
		}
		// The line end between the previous part's body and the boundary line.
		if bytes.Equal(line, mr.nl) {
			expectNewPart = true
			continue
		}
		return nil, fmt.Errorf("multipart: unexpected line in Next(): %q", line)
	}
}

func (mr *Reader) isFinalBoundary(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, mr.dashBoundaryDash)
	if !ok {
		return false
	}
	rest = skipBlanks(rest)
	return len(rest) == 0 || bytes.Equal(rest, mr.nl)
}

// isBoundaryDelimiterLine also switches to "\n" line ends when the first boundary line has
// one (a violation of the spec that mime/multipart accepts, and so does this).
func (mr *Reader) isBoundaryDelimiterLine(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, mr.dashBoundary)
	if !ok {
		return false
	}
	rest = skipBlanks(rest)
	if mr.partsRead == 0 && len(rest) == 1 && rest[0] == '\n' {
		mr.nl = mr.nl[1:]
		mr.nlDashBoundary = mr.nlDashBoundary[1:]
	}
	return bytes.Equal(rest, mr.nl)
}

func skipBlanks(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// newPart reads a part's headers: the lines up to the first empty one ("\n" or "\r\n"),
// parsed by net/textproto as mime/multipart parses them.
func (mr *Reader) newPart() (*Part, error) {
	end := -1 // the header block is buf[r:end]
	// A line starts at r+from; no '\n' in the first seen bytes of it.
	for from, seen := 0, 0; end < 0; {
		if i := bytes.IndexByte(mr.buf[mr.r+from+seen:mr.w], '\n'); i >= 0 {
			l := mr.buf[mr.r+from : mr.r+from+seen+i]
			from += seen + i + 1
			seen = 0
			if len(l) == 0 || len(l) == 1 && l[0] == '\r' {
				end = mr.r + from
			}
			continue
		}
		seen = mr.w - mr.r - from
		if mr.w-mr.r > MaxHeaderBytes || !mr.fill() {
			break
		}
	}
	if end < 0 {
		end = mr.w // src ended (or the block is too large)
	}
	if end-mr.r > MaxHeaderBytes {
		return nil, ErrHeaderTooLarge
	}
	block := mr.buf[mr.r:end]
	mr.r = end
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(block))).ReadMIMEHeader()
	if err != nil {
		if err == io.EOF && mr.err != nil && mr.err != io.EOF {
			err = mr.err // the body failed before the headers ended
		}
		return nil, err
	}
	p := &Part{Header: h, mr: mr}
	const cte = "Content-Transfer-Encoding"
	if strings.EqualFold(h.Get(cte), "quoted-printable") {
		h.Del(cte)
		p.qp = quotedprintable.NewReader(partReader{p})
	}
	return p, nil
}

// Read reads the part's bytes; io.EOF at its end.
func (p *Part) Read(b []byte) (int, error) {
	if p.qp != nil {
		return p.qp.Read(b)
	}
	return partReader{p}.Read(b)
}

type partReader struct{ p *Part }

func (pr partReader) Read(b []byte) (int, error) {
	p, mr := pr.p, pr.p.mr
	for p.n == 0 && p.err == nil {
		if p.n, p.err = mr.scan(mr.buf[mr.r:mr.w], p.total == 0); p.n > 0 || p.err != nil {
			break
		}
		// Nothing certain in the buffer: at most a delimiter's first bytes. (With src ended
		// scan always decides, so this needs more of src.)
		if len(b) >= lineLimit {
			if n := pr.direct(b); n > 0 {
				return n, nil
			}
			continue
		}
		mr.fill()
	}
	if p.n == 0 {
		return 0, p.err
	}
	n := copy(b, mr.buf[mr.r:mr.r+min(p.n, len(b))])
	mr.r += n
	p.n -= n
	p.total += int64(n)
	if p.n == 0 && p.err != nil {
		return n, p.err
	}
	return n, nil
}

// direct reads from src into b behind the few buffered bytes and returns how many bytes at
// the start of b are the part's (maybe none yet); the rest goes back into the read-ahead
// buffer, and the part's end, if found, into p.err.
func (pr partReader) direct(b []byte) int {
	p, mr := pr.p, pr.p.mr
	k := copy(b, mr.buf[mr.r:mr.w])
	mr.r, mr.w = 0, 0
	for i := 0; mr.err == nil; i++ {
		if i == 100 {
			mr.err = io.ErrNoProgress // src returned nothing a hundred times
			break
		}
		n, err := mr.src.Read(b[k:min(len(b), len(mr.buf))])
		k += n
		if err != nil {
			mr.err = err
		}
		if n > 0 {
			break
		}
	}
	n, err := mr.scan(b[:k], p.total == 0)
	mr.w = copy(mr.buf, b[n:k])
	p.total += int64(n)
	p.err = err
	return n
}

// scan returns how many bytes at the start of buf are certainly the part's, and io.EOF when
// the delimiter follows them. It decides as mime/multipart's scanUntilBoundary does; atStart
// says no byte of the part was returned yet. src's state is mr.err.
func (mr *Reader) scan(buf []byte, atStart bool) (int, error) {
	readErr := mr.err
	if readErr == io.EOF {
		readErr = io.ErrUnexpectedEOF
	}
	if atStart {
		// At the start of a body the delimiter may come without its line end.
		if bytes.HasPrefix(buf, mr.dashBoundary) {
			switch matchAfterPrefix(buf, mr.dashBoundary, readErr) {
			case -1:
				return len(mr.dashBoundary), nil
			case 0:
				return 0, nil
			case +1:
				return 0, io.EOF
			}
		}
		if bytes.HasPrefix(mr.dashBoundary, buf) {
			return 0, readErr
		}
	}
	if i := bytes.Index(buf, mr.nlDashBoundary); i >= 0 {
		switch matchAfterPrefix(buf[i:], mr.nlDashBoundary, readErr) {
		case -1:
			return i + len(mr.nlDashBoundary), nil
		case 0:
			return i, nil
		case +1:
			return i, io.EOF
		}
	}
	if bytes.HasPrefix(mr.nlDashBoundary, buf) {
		return 0, readErr
	}
	// Everything but a tail that may begin the delimiter. Only a tail shorter than the
	// delimiter can (a whole one would have been found above), so look at that much only.
	tail := max(0, len(buf)-len(mr.nlDashBoundary)+1)
	if i := bytes.LastIndexByte(buf[tail:], mr.nlDashBoundary[0]); i >= 0 && bytes.HasPrefix(mr.nlDashBoundary, buf[tail+i:]) {
		return tail + i, nil
	}
	return len(buf), readErr
}

// matchAfterPrefix says whether buf, which starts with prefix, is a delimiter: +1 yes, -1 no,
// 0 not known until more is read.
func matchAfterPrefix(buf, prefix []byte, readErr error) int {
	if len(buf) == len(prefix) {
		if readErr != nil {
			return +1
		}
		return 0
	}
	switch c := buf[len(prefix)]; c {
	case ' ', '\t', '\r', '\n':
		return +1
	case '-':
		if len(buf) == len(prefix)+1 {
			if readErr != nil {
				return -1
			}
			return 0
		}
		if buf[len(prefix)+1] == '-' {
			return +1
		}
	}
	return -1
}

package formdata

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/textproto"
	"reflect"
	"strings"
	"testing"
)

// part is what a reader made of one part: its header, its bytes, and whether reading them
// ended cleanly.
type part struct {
	Header textproto.MIMEHeader
	Body   string
	Clean  bool
}

// transcript reads every part of a body: the parts, and whether the body ended cleanly.
type transcript struct {
	Parts []part
	Clean bool
}

// cutReader returns data in reads whose sizes cycle through cuts.
type cutReader struct {
	data []byte
	cuts []int
	i    int
}

func (c *cutReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.data), c.cuts[c.i%len(c.cuts)])
	c.i++
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// readSizes cycles the buffer sizes a part is read with: small ones through the read-ahead
// buffer, large ones straight from the source.
var readSizes = []int{4096, 1, 70000, 7, 131072, 5000, 512}

var errStuck = errors.New("reads return nothing")

func readAll(r io.Reader, bufs [][]byte) (string, error) {
	var out []byte
	for i, empty := 0, 0; ; i++ {
		n, err := r.Read(bufs[i%len(bufs)])
		out = append(out, bufs[i%len(bufs)][:n]...)
		if err == io.EOF {
			return string(out), nil
		}
		if err != nil {
			return string(out), err
		}
		if empty++; n > 0 {
			empty = 0
		} else if empty > 100 {
			return string(out), errStuck
		}
	}
}

type nexter interface {
	next() (textproto.MIMEHeader, io.Reader, error)
}

type stdReader struct{ r *multipart.Reader }

func (s stdReader) next() (textproto.MIMEHeader, io.Reader, error) {
	p, err := s.r.NextPart()
	if err != nil {
		return nil, nil, err
	}
	return p.Header, p, nil
}

type ourReader struct{ r *Reader }

func (o ourReader) next() (textproto.MIMEHeader, io.Reader, error) {
	p, err := o.r.NextPart()
	if err != nil {
		return nil, nil, err
	}
	return p.Header, p, nil
}

func read(r nexter, sizes []int) (transcript, error) {
	var t transcript
	bufs := make([][]byte, len(sizes))
	for i := range sizes {
		bufs[i] = make([]byte, sizes[i])
	}
	for range 1000 {
		h, body, err := r.next()
		if err == io.EOF {
			t.Clean = true
			return t, nil
		}
		if err != nil {
			return t, err
		}
		b, err := readAll(body, bufs)
		if err == errStuck {
			return t, err
		}
		t.Parts = append(t.Parts, part{Header: h, Body: b, Clean: err == nil})
	}
	return t, nil
}

// FuzzReader holds Reader to mime/multipart: for any body and boundary, delivered in any
// cuts and read in any sizes, the same parts with the same headers and bytes, and the same
// verdict (a clean end or an error) for every part and for the body.
func FuzzReader(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s), "XyZ", uint8(3))
	}
	f.Add([]byte(curlBody("XyZ", "G1 X1\r\n--XyZ-\r\n--Xy\r\n")), "XyZ", uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, boundary string, cut uint8) {
		if len(boundary) > MaxBoundary {
			return
		}
		cuts := []int{int(cut) + 1, 1, 3 * (int(cut) + 1), 65536}
		want, werr := read(stdReader{multipart.NewReader(&cutReader{data: data, cuts: []int{1000}}, boundary)}, []int{512})
		ours, err := NewReader(&cutReader{data: data, cuts: cuts}, boundary)
		if err != nil {
			t.Fatal(err)
		}
		got, gerr := read(ourReader{ours}, readSizes[int(cut)%len(readSizes):])
		if gerr == errStuck {
			t.Fatalf("body %q boundary %q: a part's reads return nothing", data, boundary)
		}
		if errors.Is(gerr, ErrHeaderTooLarge) {
			return // a limit of ours
		}
		if !reflect.DeepEqual(got, want) || (gerr == nil) != (werr == nil) {
			t.Fatalf("body %q boundary %q:\n ours     %+v, %v\n multipart %+v, %v", data, boundary, got, gerr, want, werr)
		}
	})
}

func curlBody(boundary, file string) string {
	return "--" + boundary + "\r\n" +
		"Content-Disposition: form-data; name=\"path\"\r\n\r\nsub\r\n" +
		"--" + boundary + "\r\n" +
		"Content-Disposition: form-data; name=\"file\"; filename=\"a.gcode\"\r\n" +
		"Content-Type: application/octet-stream\r\n\r\n" +
		file + "\r\n--" + boundary + "--\r\n"
}

var seeds = []string{
	curlBody("XyZ", "G28\nG1 X1\n"),
	curlBody("XyZ", ""),
	curlBody("XyZ", "\r\n\r\n--XyZ"),
	"preamble\r\n" + curlBody("XyZ", "x"),
	strings.ReplaceAll(curlBody("XyZ", "G1\n"), "\r\n", "\n"),
	"--XyZ\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nG1=20X1=\r\n\r\n--XyZ--",
	"--XyZ\r\n\r\n--XyZ\r\n\r\nb\r\n--XyZ--",
	"--XyZ  \r\nA: b\r\n c\r\n\r\nbody\r\n--XyZ--  \r\nepilogue",
	"--XyZ\r\nA: b\r\n\r\nbody\r\n--XyZ",
	"--XyZ\r\nA: b\r\n\r\nbody\r\n--XyZ-",
	"--XyZ\r\nA: b\r\n\r\nbody\r\n--XyZx\r\n--XyZ--",
	"--XyZ\r\nA: b\r\n\r\n--XyZ\r\n\r\n\r\n--XyZ--",
	"--XyZ\r\nA b\r\n\r\nx\r\n--XyZ--",
	"--XyZ\r\nA: b\r\n",
	"--XyZ\r\nA: b\r\n\r\nbody\r\nnot a boundary\r\n--XyZ--",
	"--XyZ\r\n\r\nbody\r\n--XyZ\r\nx",
}

// A large file through the real path's reads (128 KiB chunks) with delimiter look-alikes on
// every read boundary comes out byte for byte.
func TestLargeFile(t *testing.T) {
	const boundary = "------------------------d74496d66958873e"
	var sb strings.Builder
	for i := 0; sb.Len() < 3<<20; i++ {
		fmt.Fprintf(&sb, "G1 X%d.%03d Y5 E0.1\n", i%200, i%1000)
		if i%4001 == 0 {
			sb.WriteString("\r\n--" + boundary[:i%len(boundary)] + "\n")
		}
	}
	file := sb.String()
	body := curlBody(boundary, file)
	for _, cuts := range [][]int{{65536}, {1448, 7, 65536}, {1, 2, 3, 100000}} {
		r, err := NewReader(&cutReader{data: []byte(body), cuts: cuts}, boundary)
		if err != nil {
			t.Fatal(err)
		}
		got, err := read(ourReader{r}, []int{128 << 10, 100, 128<<10 - 1})
		if err != nil || !got.Clean || len(got.Parts) != 2 {
			t.Fatalf("cuts %v: %+v, %v", cuts, got.Parts, err)
		}
		if got.Parts[1].Body != file || !got.Parts[1].Clean || got.Parts[0].Body != "sub" {
			t.Fatalf("cuts %v: file of %d bytes came out as %d bytes", cuts, len(file), len(got.Parts[1].Body))
		}
	}
}

func TestLimits(t *testing.T) {
	if _, err := NewReader(strings.NewReader(""), strings.Repeat("b", MaxBoundary+1)); err == nil {
		t.Error("NewReader took a boundary over MaxBoundary")
	}
	body := "--b\r\nA: " + strings.Repeat("x", MaxHeaderBytes) + "\r\n\r\nbody\r\n--b--\r\n"
	r, _ := NewReader(strings.NewReader(body), "b")
	if _, err := r.NextPart(); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("NextPart with a %d-byte header = %v, want ErrHeaderTooLarge", MaxHeaderBytes, err)
	}
	// A body that never ends a line is refused once mime/multipart's line buffer is full.
	r, _ = NewReader(bytes.NewReader(bytes.Repeat([]byte("x"), 1<<20)), "b")
	if _, err := r.NextPart(); err == nil || err == io.EOF {
		t.Errorf("NextPart of an endless line = %v, want an error", err)
	}
}

// stallReader returns its data, then nothing and no error, forever.
type stallReader struct{ data []byte }

func (s *stallReader) Read(p []byte) (int, error) {
	n := copy(p, s.data)
	s.data = s.data[n:]
	return n, nil
}

// A body that stops returning bytes without an error fails with io.ErrNoProgress (as bufio
// and mime/multipart do) instead of spinning, whether the part is read in small or large
// pieces and whatever of a delimiter is buffered.
func TestNoProgress(t *testing.T) {
	for _, body := range []string{"--b\r\n", "--b\r\n\r\nsome", "--b\r\n\r\nsome\r\n--", "--b\r\n\r\nsome\r\n--b"} {
		for _, size := range []int{1, 4096, 128 << 10} {
			r, _ := NewReader(&stallReader{data: []byte(body)}, "b")
			var err error
			for err == nil { // parts, each to its end, until something fails
				var p *Part
				if p, err = r.NextPart(); err == nil {
					_, err = readAll(p, [][]byte{make([]byte, size)})
				}
			}
			if !errors.Is(err, io.ErrNoProgress) {
				t.Errorf("body %q read by %d: %v, want io.ErrNoProgress", body, size, err)
			}
		}
	}
}

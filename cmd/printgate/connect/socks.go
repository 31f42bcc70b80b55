package connect

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// The SOCKS5 proxy (RFC 1928): CONNECT only, no authentication (it listens on loopback). A
// destination is a tunnel address inside the config's AllowedIPs or a printer name, resolved
// through the gateway; anything else is refused with "not allowed by ruleset", so the proxy
// never becomes a way out to the internet through the gateway.

// SOCKS5 reply codes.
const (
	socksOK            = 0x00
	socksFailure       = 0x01
	socksNotAllowed    = 0x02
	socksHostUnreach   = 0x04
	socksRefused       = 0x05
	socksCmdUnsupport  = 0x07
	socksAddrUnsupport = 0x08
)

// socksHandshakeTimeout bounds the greeting and request.
const socksHandshakeTimeout = 30 * time.Second

type socksServer struct {
	c     *Client
	ln    net.Listener
	conns connSet

	ctx    context.Context
	cancel context.CancelFunc
}

func (c *Client) listenSOCKS(ap netip.AddrPort) (*socksServer, error) {
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		return nil, fmt.Errorf("connect: socks: %w", err)
	}
	s := &socksServer{c: c}
	s.ln = listener{Listener: ln, s: &s.conns}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func (s *socksServer) serve() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.c.wg.Add(1)
		go func() {
			defer s.c.wg.Done()
			s.handle(conn)
		}()
	}
}

func (s *socksServer) close() {
	s.cancel()
	s.ln.Close()
	s.conns.closeAll()
}

// socksRequest is a parsed CONNECT request.
type socksRequest struct {
	cmd  byte
	name string     // a domain name; "" when addr is set
	addr netip.Addr // an address literal
	port uint16
}

// socksError is a refusal with its reply code.
type socksError struct {
	code byte
	err  error
}

func (e *socksError) Error() string { return e.err.Error() }

func (s *socksServer) handle(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(socksHandshakeTimeout))
	br := bufio.NewReader(conn)
	req, err := readSOCKS(br, conn)
	if err != nil {
		var se *socksError
		if errors.As(err, &se) {
			writeSOCKSReply(conn, se.code, netip.AddrPort{})
		}
		s.c.logf("connect: socks %v: %v", conn.RemoteAddr(), err)
		return
	}
	up, err := s.dial(req)
	if err != nil {
		code := byte(socksFailure)
		var se *socksError
		if errors.As(err, &se) {
			code = se.code
		}
		writeSOCKSReply(conn, code, netip.AddrPort{})
		s.c.logf("connect: socks %v: %v", conn.RemoteAddr(), err)
		return
	}
	bound, _ := netip.ParseAddrPort(up.LocalAddr().String())
	if err := writeSOCKSReply(conn, socksOK, bound); err != nil {
		up.Close()
		return
	}
	conn.SetDeadline(time.Time{})
	stop := context.AfterFunc(s.ctx, func() { up.Close() }) // Close ends a half-closed splice too
	defer stop()
	if n := br.Buffered(); n > 0 { // the client did not wait for our reply
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			up.Close()
			return
		}
	}
	splice(conn, up)
}

// dial resolves and checks the request's destination and dials it inside the tunnel.
func (s *socksServer) dial(req socksRequest) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	a := req.addr
	if req.name != "" {
		var err error
		if a, err = s.c.Resolve(ctx, req.name); err != nil {
			return nil, &socksError{socksHostUnreach, err}
		}
	}
	ap := netip.AddrPortFrom(a, req.port)
	if !s.c.Allowed(a) {
		return nil, &socksError{socksNotAllowed, &NotAllowedError{Addr: a}}
	}
	conn, err := s.c.Dial(ctx, ap)
	if err != nil {
		return nil, &socksError{socksRefused, err}
	}
	return conn, nil
}

// readSOCKS reads the greeting, answers it (no authentication), and reads the request.
func readSOCKS(r io.Reader, w io.Writer) (socksRequest, error) {
	var req socksRequest
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return req, fmt.Errorf("greeting: %w", err)
	}
	if hdr[0] != 5 {
		return req, fmt.Errorf("greeting: version %d, want 5", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return req, fmt.Errorf("greeting: %w", err)
	}
	noAuth := false
	for _, m := range methods {
		noAuth = noAuth || m == 0
	}
	if !noAuth {
		w.Write([]byte{5, 0xff})
		return req, errors.New("greeting: client offers no method without authentication")
	}
	if _, err := w.Write([]byte{5, 0}); err != nil {
		return req, err
	}
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return req, fmt.Errorf("request: %w", err)
	}
	if h[0] != 5 {
		return req, &socksError{socksFailure, fmt.Errorf("request: version %d, want 5", h[0])}
	}
	req.cmd = h[1]
	switch h[3] {
	case 1, 4:
		b := make([]byte, 4)
		if h[3] == 4 {
			b = make([]byte, 16)
		}
		if _, err := io.ReadFull(r, b); err != nil {
			return req, fmt.Errorf("request: %w", err)
		}
		a, _ := netip.AddrFromSlice(b)
		req.addr = a.Unmap()
	case 3:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return req, fmt.Errorf("request: %w", err)
		}
		b := make([]byte, n[0])
		if _, err := io.ReadFull(r, b); err != nil {
			return req, fmt.Errorf("request: %w", err)
		}
		if a, err := netip.ParseAddr(string(b)); err == nil && a.Zone() == "" {
			req.addr = a.Unmap()
		} else if validName(string(b)) {
			req.name = string(b)
		} else {
			return req, &socksError{socksHostUnreach, fmt.Errorf("request: %q is not a printer name", b)}
		}
	default:
		return req, &socksError{socksAddrUnsupport, fmt.Errorf("request: address type %d", h[3])}
	}
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return req, fmt.Errorf("request: %w", err)
	}
	req.port = binary.BigEndian.Uint16(p[:])
	if req.cmd != 1 {
		return req, &socksError{socksCmdUnsupport, fmt.Errorf("request: command %d (only CONNECT is offered)", req.cmd)}
	}
	if req.port == 0 {
		return req, &socksError{socksNotAllowed, errors.New("request: port 0")}
	}
	return req, nil
}

// writeSOCKSReply writes a reply with the bound address (0.0.0.0:0 when not valid).
func writeSOCKSReply(w io.Writer, code byte, bound netip.AddrPort) error {
	b := []byte{5, code, 0}
	a := bound.Addr().Unmap()
	switch {
	case a.Is4():
		b = append(b, 1)
		b = append(b, a.AsSlice()...)
	case a.Is6():
		b = append(b, 4)
		b = append(b, a.AsSlice()...)
	default:
		b = append(b, 1, 0, 0, 0, 0)
	}
	b = binary.BigEndian.AppendUint16(b, bound.Port())
	_, err := w.Write(b)
	return err
}

package control

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/printgate/printgate/enroll"
)

// Handler answers calls. Handle must be safe for concurrent use; a failure is a Response
// with Error set.
type Handler interface {
	Handle(ctx context.Context, req Request) Response
}

// HandlerFunc is a function as a Handler.
type HandlerFunc func(ctx context.Context, req Request) Response

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, req Request) Response { return f(ctx, req) }

// Server answers calls on listeners. Set its fields, then call Serve with each listener (each
// from its own goroutine); Close stops every listener and open connection and waits for them.
// Once closed, always closed.
type Server struct {
	// Handler answers every call. Required.
	Handler Handler
	// Allow, when set, checks each connection before its request is read; a refused caller
	// gets the error as a Response and nothing else.
	Allow func(net.Conn) error
	// Logf logs refused callers and replies that could not be written; nil discards.
	Logf func(format string, args ...any)
	// Timeout bounds one connection, request to reply; zero: DefaultTimeout.
	Timeout time.Duration

	mu struct {
		sync.Mutex
		closed bool
		lns    map[net.Listener]bool
		conns  map[net.Conn]bool
	}
	wg sync.WaitGroup // Serve calls and connections
}

// Serve accepts connections on ln and answers each until ln fails or the server is closed.
// It closes ln when it returns; after Close it returns an error wrapping net.ErrClosed.
func (s *Server) Serve(ln net.Listener) error {
	if !s.track(ln, nil) {
		ln.Close()
		return fmt.Errorf("control: serve: %w", net.ErrClosed)
	}
	defer s.untrack(ln, nil)
	defer ln.Close()
	s.logf("control: serving %s", ln.Addr())
	defer s.logf("control: stopped serving %s", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("control: accept: %w", err)
		}
		if !s.track(nil, c) {
			c.Close()
			return fmt.Errorf("control: serve: %w", net.ErrClosed)
		}
		go func() {
			defer s.untrack(nil, c)
			defer c.Close()
			s.ServeConn(context.Background(), c)
		}()
	}
}

// ServeConn answers the one call on c. It does not close c.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	c.SetDeadline(time.Now().Add(timeout))
	enc := json.NewEncoder(c)
	if s.Allow != nil {
		if err := s.Allow(c); err != nil {
			s.logf("control: refused: %v", err)
			enc.Encode(Response{Error: "control: " + err.Error()})
			return
		}
	}
	// One message, then strictly (enroll.DecodeStrict): unknown fields, duplicate keys and
	// trailing data are refused, so {"role":"viewer","role":"admin"} enrolls nobody.
	var raw json.RawMessage
	var req Request
	dec := json.NewDecoder(bufio.NewReader(io.LimitReader(c, MaxMessage)))
	err := dec.Decode(&raw)
	if err == nil {
		err = enroll.DecodeStrict(raw, &req)
	}
	if err != nil {
		enc.Encode(Response{Error: fmt.Sprintf("control: bad request: %v", err)})
		return
	}
	resp := s.Handler.Handle(ctx, req)
	if err := enc.Encode(resp); err != nil {
		s.logf("control: %s: write reply: %v", req.Op, err)
	}
}

// Close stops every listener given to Serve and every open connection, and waits for them.
// A second Close returns an error wrapping net.ErrClosed.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return fmt.Errorf("control: close: %w", net.ErrClosed)
	}
	s.mu.closed = true
	for ln := range s.mu.lns {
		ln.Close()
	}
	for c := range s.mu.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// track registers a listener or a connection; false once the server is closed.
func (s *Server) track(ln net.Listener, c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return false
	}
	if s.mu.lns == nil {
		s.mu.lns = map[net.Listener]bool{}
		s.mu.conns = map[net.Conn]bool{}
	}
	if ln != nil {
		s.mu.lns[ln] = true
	}
	if c != nil {
		s.mu.conns[c] = true
	}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(ln net.Listener, c net.Conn) {
	s.mu.Lock()
	delete(s.mu.lns, ln)
	delete(s.mu.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

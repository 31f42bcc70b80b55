package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/printerd"
	"github.com/printgate/printgate/printerd/files"
	"github.com/printgate/printgate/printerd/marlin"
	"github.com/printgate/printgate/printerd/policy"
)

// The real path: printerd's OctoPrint face of one printer ("bench") on the listener, with a
// policy-checked file store in dir, as the gateway wires it (cmd/printgate/gateway). Every
// peer address in peers is an operator. The printer itself is idle and unplugged: uploads
// and downloads never touch it.
func serveReal(ln net.Listener, dir string, peers []netip.Addr) (io.Closer, error) {
	pol, err := policy.New(policy.Limits{})
	if err != nil {
		return nil, err
	}
	store, err := files.New(files.Config{Dir: dir, Check: pol.CheckFile})
	if err != nil {
		return nil, err
	}
	srv, err := printerd.New(printerd.Config{
		Printers: map[string]printerd.PrinterConfig{"bench": {Printer: idlePrinter{}, Files: store, Policy: pol}},
		Identity: operators(peers),
	})
	if err != nil {
		return nil, err
	}
	go srv.ServePrinter("bench", ln)
	return srv, nil
}

type operators []netip.Addr

func (o operators) WhoIs(a netip.Addr) (printerd.Caller, bool) {
	for i, p := range o {
		if p == a {
			return printerd.Caller{Name: "device" + strings.Repeat("x", i), Role: enroll.Operator}, true
		}
	}
	return printerd.Caller{}, false
}

func (operators) CheckAPIKey(peer, key string) (enroll.Role, bool) { return "", false }

var errUnplugged = errors.New("bench printer is not connected")

// idlePrinter is a printer that never connects.
type idlePrinter struct{}

func (idlePrinter) Status() marlin.Status   { return marlin.Status{State: marlin.Disconnected} }
func (idlePrinter) History() []marlin.Temps { return nil }
func (idlePrinter) Subscribe() (<-chan marlin.Event, func()) {
	return make(chan marlin.Event), func() {}
}
func (idlePrinter) Connect() error                     { return errUnplugged }
func (idlePrinter) Disconnect() error                  { return nil }
func (idlePrinter) Send(context.Context, string) error { return errUnplugged }
func (idlePrinter) Emergency() error                   { return errUnplugged }
func (idlePrinter) Start(context.Context, string, io.ReaderAt, int64) error {
	return errUnplugged
}
func (idlePrinter) Pause() error  { return errUnplugged }
func (idlePrinter) Resume() error { return errUnplugged }
func (idlePrinter) Cancel() error { return errUnplugged }

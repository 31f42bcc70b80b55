package gateway

import (
	"context"
	"errors"
	"io"
)

// openSim makes an in-process simulated printer for a NAME=sim spec. It returns the link
// opener for the controller and a function that stops the simulator.
func (g *Gateway) openSim(ctx context.Context, spec PrinterSpec) (func(context.Context) (io.ReadWriteCloser, error), func() error, error) {
	return nil, nil, errors.New("simulated printers need printerd/marlinsim, which this build does not have yet")
}

// SimAvailable reports whether this build can run NAME=sim printers.
const SimAvailable = false

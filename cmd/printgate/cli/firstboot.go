package cli

import (
	"context"
	"errors"

	"github.com/printgate/printgate/cmd/printgate/gateway"
)

// readBootSettings reads the owner's settings file from the boot partition.
func readBootSettings(bootDir string) (*bootSettings, error) {
	return &bootSettings{}, nil
}

// runFirstBoot shows the first admin enrollment until an admin has joined.
func runFirstBoot(ctx context.Context, e *env, g *gateway.Gateway, bootDir string, logf func(string, ...any)) error {
	return errors.New("first boot is not in this build")
}

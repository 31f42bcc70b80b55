package gateway

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Notifier speaks the systemd notification protocol (sd_notify(3)) over the unixgram socket
// named by $NOTIFY_SOCKET. The zero value, and a Notifier made without $NOTIFY_SOCKET, does
// nothing: outside systemd's Type=notify every method is a no-op.
type Notifier struct {
	addr     string        // socket path; "@name" is the abstract namespace
	watchdog time.Duration // WATCHDOG_USEC for this process; zero: no watchdog
}

// NotifierFromEnv reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID through getenv.
func NotifierFromEnv(getenv func(string) string) *Notifier {
	n := &Notifier{addr: getenv("NOTIFY_SOCKET")}
	if n.addr == "" {
		return n
	}
	if pid := getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return n // the watchdog is meant for another process
	}
	if us, err := strconv.ParseInt(getenv("WATCHDOG_USEC"), 10, 64); err == nil && us > 0 {
		n.watchdog = time.Duration(us) * time.Microsecond
	}
	return n
}

// Enabled reports whether a notification socket is configured.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != "" }

// Notify sends one state string, e.g. "READY=1" or "STOPPING=1".
func (n *Notifier) Notify(state string) error {
	if !n.Enabled() {
		return nil
	}
	name := n.addr
	if name[0] == '@' {
		name = "\x00" + name[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", state, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", state, err)
	}
	return nil
}

// WatchdogInterval returns how often the watchdog must be fed, half of WATCHDOG_USEC as
// sd_watchdog_enabled(3) advises, or zero when there is no watchdog.
func (n *Notifier) WatchdogInterval() time.Duration {
	if !n.Enabled() {
		return 0
	}
	return n.watchdog / 2
}

// Watchdog sends WATCHDOG=1 every WatchdogInterval while alive() holds, until ctx ends. It
// returns at once when there is no watchdog. alive lets the daemon stop feeding systemd when
// its own loop is stuck, so systemd restarts it.
func (n *Notifier) Watchdog(ctx context.Context, alive func() bool) {
	iv := n.WatchdogInterval()
	if iv <= 0 {
		return
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if alive == nil || alive() {
				n.Notify("WATCHDOG=1")
			}
		}
	}
}

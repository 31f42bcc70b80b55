package gateway

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestNotifier(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	env := map[string]string{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000", "WATCHDOG_PID": strconv.Itoa(os.Getpid())}
	n := NotifierFromEnv(func(k string) string { return env[k] })
	if got := n.WatchdogInterval(); got != 20*time.Millisecond {
		t.Errorf("WatchdogInterval = %v, want 20ms", got)
	}
	if err := n.Notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	k, err := ln.Read(buf)
	if err != nil || string(buf[:k]) != "READY=1" {
		t.Fatalf("read %q, %v; want READY=1", buf[:k], err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Watchdog(ctx, func() bool { return true }); close(done) }()
	k, err = ln.Read(buf)
	if err != nil || string(buf[:k]) != "WATCHDOG=1" {
		t.Errorf("read %q, %v; want WATCHDOG=1", buf[:k], err)
	}
	cancel()
	<-done

	off := NotifierFromEnv(func(string) string { return "" })
	if off.Enabled() || off.Notify("READY=1") != nil || off.WatchdogInterval() != 0 {
		t.Errorf("notifier without NOTIFY_SOCKET is not a no-op")
	}
	other := NotifierFromEnv(func(k string) string {
		return map[string]string{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000", "WATCHDOG_PID": "1"}[k]
	})
	if other.WatchdogInterval() != 0 {
		t.Errorf("watchdog meant for pid 1 is fed by this process")
	}
}

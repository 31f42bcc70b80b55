// Command sink is printgate's side of the throughput benchmark: a tunnel.Device on a
// netstack.Stack with one peer (more with -peers), serving on the gateway's tunnel address
// either an HTTP upload sink or, with -store, the real path: printerd's OctoPrint face of one
// printer with its policy-checked file store (real.go).
// It prints "ready" once the UDP port is bound and the listener is up. Built and run by the
// harness in bench/throughput; not part of the product.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/printgate/printgate/netstack"
	"github.com/printgate/printgate/tunnel"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func main() {
	start := time.Now()
	var (
		privKey = flag.String("private-key", "", "gateway private key (base64)")
		peerKey = flag.String("peer", "", "client public key (base64)")
		addr    = flag.String("addr", "10.250.200.1", "gateway tunnel address")
		peerIP  = flag.String("peer-ip", "10.250.200.2", "client tunnel address")
		port    = flag.Int("port", 51820, "UDP listen port")
		rcvBuf  = flag.Int("rcvbuf", 0, "TCP receive buffer bound (0: netstack default)")
		sndBuf  = flag.Int("sndbuf", 0, "TCP send buffer bound (0: netstack default)")
		cpuProf = flag.String("cpuprofile", "", "write a CPU profile to this file until exit or SIGUSR1")
		store   = flag.String("store", "", "serve the real path with the file store in this folder")
		more    = flag.String("peers", "", "more peers: KEY@IP,KEY@IP,...")
	)
	flag.Parse()
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		var once sync.Once
		stop := func() { once.Do(func() { pprof.StopCPUProfile(); f.Close() }) }
		defer stop()
		// SIGUSR1 ends the profile early: the harness sends it after an upload, so that the
		// profile holds the upload alone.
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		go func() { <-usr1; stop() }()
	}
	if err := run(start, *privKey, *peerKey, *addr, *peerIP, *port, *rcvBuf, *sndBuf, *store, *more); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run(start time.Time, privKey, peerKey, addr, peerIP string, port, rcvBuf, sndBuf int, store, more string) error {
	sk, err := wgtypes.ParseKey(privKey)
	if err != nil {
		return fmt.Errorf("private key: %w", err)
	}
	pk, err := wgtypes.ParseKey(peerKey)
	if err != nil {
		return fmt.Errorf("peer key: %w", err)
	}
	gw, err := netip.ParseAddr(addr)
	if err != nil {
		return err
	}
	cl, err := netip.ParseAddr(peerIP)
	if err != nil {
		return err
	}
	st, err := netstack.New(netstack.Config{Addrs: []netip.Addr{gw}, TCPReceiveBuffer: rcvBuf, TCPSendBuffer: sndBuf})
	if err != nil {
		return err
	}
	defer st.Close()
	dev, err := tunnel.New(tunnel.Config{PrivateKey: sk, ListenPort: port, TUN: st.TUN()})
	if err != nil {
		return err
	}
	defer dev.Close()
	peers := []tunnel.Peer{{PublicKey: pk, AllowedIPs: []netip.Prefix{netip.PrefixFrom(cl, cl.BitLen())}}}
	ips := []netip.Addr{cl}
	for _, kv := range strings.Split(more, ",") {
		if kv == "" {
			continue
		}
		k, ip, _ := strings.Cut(kv, "@")
		key, err := wgtypes.ParseKey(k)
		if err != nil {
			return fmt.Errorf("-peers: %w", err)
		}
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return fmt.Errorf("-peers: %w", err)
		}
		peers = append(peers, tunnel.Peer{PublicKey: key, AllowedIPs: []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}})
		ips = append(ips, a)
	}
	if err := dev.Apply(peers); err != nil {
		return err
	}
	ln, err := st.ListenTCP(netip.AddrPortFrom(gw, 80))
	if err != nil {
		return err
	}
	if store != "" {
		srv, err := serveReal(ln, store, ips)
		if err != nil {
			return err
		}
		fmt.Printf("ready %d us\n", time.Since(start).Microseconds())
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		return srv.Close()
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "received %d bytes\n", n)
	})}
	go srv.Serve(ln)
	fmt.Printf("ready %d us\n", time.Since(start).Microseconds())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	srv.Close()
	return nil
}

package gateway

import (
	"time"

	"github.com/printgate/printgate/enroll"
	"github.com/printgate/printgate/tunnel"
)

// observeLocked feeds the device's stats to the roster: first handshakes make pending peers
// active, expired pending peers leave the live set, and a key seen alternating between two
// endpoints is flagged as cloned. Caller holds g.reg; the caller re-applies afterwards.
func (g *Gateway) observeLocked(st []tunnel.PeerStats, now time.Time) {
	obs := make([]enroll.Observation, len(st))
	for i, s := range st {
		obs[i] = enroll.Observation{PublicKey: s.PublicKey, Endpoint: s.Endpoint, LastHandshake: s.LastHandshake, Rx: s.RxBytes, Tx: s.TxBytes}
	}
	events, err := g.reg.r.Observe(obs, now)
	if err != nil {
		g.logf("gateway: observe: %v", err)
	}
	for _, e := range events {
		switch e.Kind {
		case enroll.EventClone:
			g.logf("gateway: ALARM: %v", e)
		default:
			g.logf("gateway: %v", e)
		}
	}
}

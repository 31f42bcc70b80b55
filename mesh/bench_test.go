package mesh

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkCommitLatency measures one write (an enrollment) from call to commit on a 3-node
// loopback cluster: on the leader, and on a follower that forwards it. It reports the p50 and
// p99 of the single writes alongside the mean.
func BenchmarkCommitLatency(b *testing.B) {
	c := newCluster(b, 3, nil)
	for _, via := range []string{"leader", "follower"} {
		b.Run(via, func(b *testing.B) {
			n := c.leader()
			if via == "follower" {
				n = c.follower()
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				_, err := n.Enroll(context.Background(), EnrollCmd{Name: fmt.Sprintf("%s-%d-%d", via, b.N, i), Role: Viewer, PublicKey: newKey(b), Home: n.id})
				lat = append(lat, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkRevokeEverywhere measures a revocation from the call on a follower until every
// node's local view shows the device revoked, on a 3-node loopback cluster.
func BenchmarkRevokeEverywhere(b *testing.B) {
	c := newCluster(b, 3, nil)
	f := c.follower()
	ctx := context.Background()
	names := make([]string, b.N)
	for i := range names {
		names[i] = fmt.Sprintf("r-%d-%d", b.N, i)
		if _, err := f.Enroll(ctx, EnrollCmd{Name: names[i], Role: Viewer, PublicKey: newKey(b), Home: f.id}); err != nil {
			b.Fatal(err)
		}
	}
	c.converged()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for _, name := range names {
		start := time.Now()
		if _, err := f.Revoke(ctx, name); err != nil {
			b.Fatal(err)
		}
		for _, tn := range c.nodes {
			for {
				ch := tn.fsm.next()
				if d, _ := tn.Roster().Device(name); d.State == Revoked {
					break
				}
				<-ch
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

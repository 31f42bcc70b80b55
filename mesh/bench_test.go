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

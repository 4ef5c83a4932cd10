package node

import (
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3"
)

// BenchmarkPutOneMember is the node's own cost of one put on a one-member
// cluster: Submit, the write handed out and reported durable, the entry
// applied and answered; no disk, network or host.
//
//	go test ./node -run '^$' -bench PutOneMember -benchmem
func BenchmarkPutOneMember(b *testing.B) {
	for _, batch := range []int{1, 16} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			n, err := Bootstrap(Config{ID: 1, TickMs: 100, ElectionTicks: 10, HeartbeatTicks: 1, SnapshotCount: 100_000},
				[]Member{{ID: 1, PeerURLs: []string{"http://a:2380"}}})
			if err != nil {
				b.Fatal(err)
			}
			settle := func() []Result {
				var results []Result
				for range 64 {
					eff := n.Effects()
					results = append(results, eff.Results...)
					for _, p := range eff.Persist {
						if p.Wait {
							n.Persisted(p.Seq)
						}
					}
					if len(eff.Persist) == 0 && !eff.More && len(eff.Messages) == 0 {
						break
					}
				}
				return results
			}
			settle()
			n.CampaignIfSoleVoter()
			for range 8 {
				settle()
			}
			if n.Status().State != raft.StateLeader {
				b.Fatal("not leader")
			}
			value := make([]byte, 256)
			var h Handle
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				for j := range batch {
					h++
					n.Submit(h, &pb.PutRequest{Key: fmt.Appendf(nil, "key-%07d", (i+j)%100_000), Value: value})
				}
				answered := 0
				for range 8 {
					for _, r := range settle() {
						if r.Err != nil {
							b.Fatal(r.Err)
						}
						answered++
					}
					if answered == batch {
						break
					}
				}
				if answered != batch {
					b.Fatalf("%d of %d puts answered", answered, batch)
				}
			}
		})
	}
}

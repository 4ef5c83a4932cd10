package node

import (
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
)

// A restarted member that is its configuration's only voter leads without
// waiting out an election timeout; one of three voters waits for ticks.
func TestCampaignIfSoleVoter(t *testing.T) {
	for _, tc := range []struct {
		voters   []uint64
		campaign bool
	}{
		{[]uint64{1}, true},
		{[]uint64{1, 2, 3}, false},
		{[]uint64{2}, false}, // a learner or a removed member never campaigns
	} {
		var ms membership
		ms.put(Member{ID: 1, PeerURLs: []string{"http://a:1"}})
		data := encodeSnapshot(kvsm.New(kvsm.Config{}), &ms, nil)
		snap := &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{
			Index: proto.Uint64(5), Term: proto.Uint64(2), ConfState: &raftpb.ConfState{Voters: tc.voters},
		}}
		cfg := Config{ID: 1, TickMs: 100, ElectionTicks: 10, HeartbeatTicks: 1}
		n, err := Restart(cfg, Durable{Snapshot: snap, HardState: &raftpb.HardState{Term: proto.Uint64(2), Commit: proto.Uint64(5)}})
		if err != nil {
			t.Fatal(err)
		}
		n.CampaignIfSoleVoter()
		for range 8 { // a few rounds: the vote for itself is a durable write
			for _, p := range n.Effects().Persist {
				if p.Wait {
					n.Persisted(p.Seq)
				}
			}
		}
		if leads := n.Status().State == raft.StateLeader; leads != tc.campaign {
			t.Errorf("voters %v: leader %t without a tick, want %t", tc.voters, leads, tc.campaign)
		}
	}
}

package sim

import (
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/noded/noded/node"
)

// The simulator checks raft's state machine safety itself: members that
// apply one index must apply one entry and reach one revision.
func TestAppliedCatchesDivergence(t *testing.T) {
	put := func(v string) *pb.InternalRaftRequest {
		return &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("k"), Value: []byte(v)}}
	}
	cases := []struct {
		name        string
		first, then node.AppliedEntry
		want        string
	}{
		{"same entry", node.AppliedEntry{Index: 1, Term: 1, Type: raftpb.EntryNormal, RequestID: 7, Request: put("a"), Rev: 2},
			node.AppliedEntry{Index: 1, Term: 1, Type: raftpb.EntryNormal, RequestID: 7, Request: put("a"), Rev: 2}, ""},
		{"other term", node.AppliedEntry{Index: 1, Term: 1, RequestID: 7, Request: put("a"), Rev: 2},
			node.AppliedEntry{Index: 1, Term: 2, RequestID: 7, Request: put("a"), Rev: 2}, "state-machine-safety"},
		{"other request", node.AppliedEntry{Index: 1, Term: 1, RequestID: 7, Request: put("a"), Rev: 2},
			node.AppliedEntry{Index: 1, Term: 1, RequestID: 7, Request: put("b"), Rev: 2}, "state-machine-safety"},
		{"other revision", node.AppliedEntry{Index: 1, Term: 1, RequestID: 7, Request: put("a"), Rev: 2},
			node.AppliedEntry{Index: 1, Term: 1, RequestID: 7, Request: put("a"), Rev: 3}, "deterministic-apply"},
	}
	for _, c := range cases {
		w := &world{trace: newTraceHash(nil)}
		a, b := &member{name: "m0"}, &member{name: "m1"}
		w.applied(a, c.first)
		w.applied(b, c.then)
		got := strings.Join(w.failures, "\n")
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("%s: failures %q, want %q", c.name, got, c.want)
		}
	}
}

// The persist-before-send assertion catches a member that sends what its
// disk does not hold yet.
func TestSendAssertionCatchesAckBeforeSync(t *testing.T) {
	if testing.Short() {
		t.Skip("runs whole simulated clusters")
	}
	for seed := uint64(1); seed <= 20; seed++ {
		rep := Run(Options{Seed: seed, Planted: node.PlantedBugs{AckBeforeSync: true}, assertSendsUnderPlantedBugs: true,
			Tweak: func(k *Knobs) { quiet(k); k.ClusterSize, k.SyncLatencyMeanUs = 3, 50000 }})
		for _, f := range rep.Failures {
			if strings.Contains(f, "before term") {
				return
			}
		}
	}
	t.Fatal("a member sending before its writes were durable went unnoticed in 20 seeds")
}

// An append acknowledgement in a term already durable, sent before its
// entries are: a term comparison cannot see it, the acknowledged index
// against the synced log can.
func TestSendAssertionCatchesAckAppendBeforeSync(t *testing.T) {
	if testing.Short() {
		t.Skip("runs whole simulated clusters")
	}
	for seed := uint64(1); seed <= 20; seed++ {
		rep := Run(Options{Seed: seed, Planted: node.PlantedBugs{AckAppendBeforeSync: true},
			Tweak: func(k *Knobs) { quiet(k); k.ClusterSize, k.SyncLatencyMeanUs = 3, 50000 }})
		for _, f := range rep.Failures {
			if strings.Contains(f, "before term") {
				t.Fatalf("seed %d: the planted bug changed no term, yet: %s", seed, f)
			}
			if strings.Contains(f, "persist-before-send:") && strings.Contains(f, "acknowledged entries up to") {
				return
			}
		}
	}
	t.Fatal("append acknowledgements sent before their entries were durable went unnoticed in 20 seeds")
}

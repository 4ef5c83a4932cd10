package fuzz

import (
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
	"github.com/noded/noded/node"
)

// FuzzNodeSnapshot: a member restarting from a snapshot whose data are
// arbitrary bytes (from its disk, or from a leader) must refuse them with
// an error or start: never panic. The data are tried raw and wrapped in a
// valid envelope around a valid kvsm state, so the fuzzer reaches the
// member table and the request window behind the magic.
func FuzzNodeSnapshot(f *testing.F) {
	kv := kvsm.New(kvsm.Config{}).Snapshot()
	f.Add([]byte("NODEDSN1"))
	f.Add(nodeEnvelope(kv, nil))
	f.Add(nodeEnvelope(kv, []byte{1, 10, 2, 8, 1, 0, 1, 5}))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, candidate := range [][]byte{data, nodeEnvelope(kv, data)} {
			snap := &raftpb.Snapshot{
				Data: candidate,
				Metadata: &raftpb.SnapshotMetadata{
					Index:     proto.Uint64(5),
					Term:      proto.Uint64(1),
					ConfState: &raftpb.ConfState{Voters: []uint64{1}},
				},
			}
			n, err := node.Restart(node.Config{ID: 1, TickMs: 100, ElectionTicks: 10, HeartbeatTicks: 1},
				node.Durable{Snapshot: snap, HardState: &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(5)}})
			if err != nil {
				continue
			}
			// A member that started must be able to run.
			for i := 0; i < 30; i++ {
				n.Tick()
				eff := n.Effects()
				for _, p := range eff.Persist {
					if p.Wait {
						n.Persisted(p.Seq)
					}
				}
			}
			if st := n.Status(); st.AppliedIndex < 5 {
				t.Fatalf("started below its snapshot: %v", st)
			}
		}
	})
}

// nodeEnvelope frames a kvsm state and arbitrary trailing sections the way
// node's snapshot envelope does (node/snapshot.go): magic, then the kvsm
// state length-prefixed, then the rest as given.
func nodeEnvelope(kv, rest []byte) []byte {
	b := []byte("NODEDSN1")
	b = appendUvarint(b, uint64(len(kv)))
	b = append(b, kv...)
	return append(b, rest...)
}

func appendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

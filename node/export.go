package node

import (
	"fmt"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
)

// Moving a member's state to and from other formats (etcd's snapshots and
// data directories): the applied state out, frozen, and a snapshot's data
// in, built from a state assembled elsewhere.

// Exported is a member's applied state at one applied index, frozen: the
// View is a copy-on-write copy, the rest are copies. It may be read on any
// goroutine while the node goes on.
type Exported struct {
	View         *kvsm.View
	Leases       []kvsm.LeaseInfo
	Alarms       []*pb.AlarmMember
	Members      []Member
	Removed      []uint64
	AppliedIndex uint64
	AppliedTerm  uint64 // the term of the entry at AppliedIndex
	ConfState    *raftpb.ConfState
	SizeBytes    int64 // the store's estimate of its size (kvsm.Store.SizeBytes)
}

// Export freezes the applied state. It fails only when raft no longer knows
// the term of the applied entry, which a running member always does.
func (n *Node) Export() (Exported, error) {
	term, err := n.storage.Term(n.appliedIndex)
	if err != nil {
		return Exported{}, fmt.Errorf("node: term of applied entry %d: %w", n.appliedIndex, err)
	}
	return Exported{
		View:         n.store.View(),
		Leases:       n.store.Leases(),
		Alarms:       n.store.Alarms(),
		Members:      slices.Clone(n.members.members),
		Removed:      slices.Clone(n.members.removed),
		AppliedIndex: n.appliedIndex,
		AppliedTerm:  term,
		ConfState:    proto.Clone(n.confState).(*raftpb.ConfState),
		SizeBytes:    n.store.SizeBytes(),
	}, nil
}

// SnapshotData encodes what a member restarts from (raftpb.Snapshot.Data)
// for a state assembled elsewhere: the store and the member table, with
// removed the IDs that may never come back. Names and client URLs of the
// members are kept as given.
func SnapshotData(store *kvsm.Store, members []Member, removed []uint64) ([]byte, error) {
	var ms membership
	for _, m := range members {
		if m.ID == 0 {
			return nil, fmt.Errorf("node: member with ID 0")
		}
		if _, dup := ms.get(m.ID); dup {
			return nil, fmt.Errorf("node: member %x appears twice", m.ID)
		}
		ms.put(m)
	}
	for _, id := range removed {
		if _, ok := ms.get(id); ok {
			return nil, fmt.Errorf("node: member %x is both a member and removed", id)
		}
		ms.remove(id)
	}
	return encodeSnapshot(store, &ms, nil), nil
}

// ConfChangeContext encodes the member a conf change adds or updates, in the
// form members read from ConfChange.Context.
func ConfChangeContext(m Member) []byte { return confChangeContext(m) }

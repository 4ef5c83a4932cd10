package node

import (
	"fmt"
	"math"
	"slices"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Member is one member of the cluster as the applied log describes it.
type Member struct {
	ID         uint64
	Name       string // empty until the member has started and published it
	PeerURLs   []string
	ClientURLs []string
	IsLearner  bool
}

func (m Member) String() string {
	return fmt.Sprintf("member %x name=%q peers=%s clients=%s learner=%t",
		m.ID, m.Name, strings.Join(m.PeerURLs, ","), strings.Join(m.ClientURLs, ","), m.IsLearner)
}

// Started reports whether the member has published its name, which is how
// etcd tells started members from ones only added.
func (m Member) Started() bool { return m.Name != "" }

func (m Member) proto() *pb.Member {
	return &pb.Member{
		ID:         m.ID,
		Name:       m.Name,
		PeerURLs:   slices.Clone(m.PeerURLs),
		ClientURLs: slices.Clone(m.ClientURLs),
		IsLearner:  m.IsLearner,
	}
}

func memberFromProto(p *pb.Member) Member {
	return Member{
		ID:         p.GetID(),
		Name:       p.GetName(),
		PeerURLs:   slices.Clone(p.GetPeerURLs()),
		ClientURLs: slices.Clone(p.GetClientURLs()),
		IsLearner:  p.GetIsLearner(),
	}
}

// membership is the cluster's member table: members sorted by ID, and the
// IDs removed from it (a removed ID never comes back; messages from it are
// ignored).
type membership struct {
	members []Member
	removed []uint64
}

// clone returns a copy that changes to ms do not reach (members are
// replaced whole, never changed in place).
func (ms *membership) clone() membership {
	return membership{members: slices.Clone(ms.members), removed: slices.Clone(ms.removed)}
}

func (ms *membership) find(id uint64) (int, bool) {
	return slices.BinarySearchFunc(ms.members, id, func(m Member, id uint64) int {
		switch {
		case m.ID < id:
			return -1
		case m.ID > id:
			return 1
		}
		return 0
	})
}

func (ms *membership) get(id uint64) (Member, bool) {
	i, ok := ms.find(id)
	if !ok {
		return Member{}, false
	}
	return ms.members[i], true
}

func (ms *membership) isRemoved(id uint64) bool {
	_, ok := slices.BinarySearch(ms.removed, id)
	return ok
}

func (ms *membership) put(m Member) {
	i, ok := ms.find(m.ID)
	if ok {
		ms.members[i] = m
		return
	}
	ms.members = slices.Insert(ms.members, i, m)
}

func (ms *membership) remove(id uint64) {
	if i, ok := ms.find(id); ok {
		ms.members = slices.Delete(ms.members, i, i+1)
	}
	if i, ok := slices.BinarySearch(ms.removed, id); !ok {
		ms.removed = slices.Insert(ms.removed, i, id)
	}
}

func (ms *membership) protos() []*pb.Member {
	out := make([]*pb.Member, len(ms.members))
	for i, m := range ms.members {
		out[i] = m.proto()
	}
	return out
}

func (ms *membership) voters() (total, started int) {
	for _, m := range ms.members {
		if m.IsLearner {
			continue
		}
		total++
		if m.Started() {
			started++
		}
	}
	return total, started
}

func (ms *membership) learners() int {
	n := 0
	for _, m := range ms.members {
		if m.IsLearner {
			n++
		}
	}
	return n
}

func (ms *membership) peerURLInUse(urls []string, except uint64) bool {
	for _, m := range ms.members {
		if m.ID == except {
			continue
		}
		for _, u := range m.PeerURLs {
			if slices.Contains(urls, u) {
				return true
			}
		}
	}
	return false
}

// validateConfChange checks a conf change against the member table as it
// stands when the entry is applied (etcd's ValidateConfigurationChange).
// An invalid change is applied as a no-op on every member alike.
func (ms *membership) validateConfChange(cc *raftpb.ConfChange, ctx *Member, maxLearners int) error {
	id := cc.GetNodeId()
	if ms.isRemoved(id) {
		return rpctypes.ErrGRPCMemberNotFound
	}
	existing, exists := ms.get(id)
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode:
		if exists {
			if !existing.IsLearner {
				return rpctypes.ErrGRPCMemberExist
			}
			return nil // promotion of a learner
		}
		if ctx == nil || ctx.ID != id {
			return rpctypes.ErrGRPCMemberBadURLs
		}
		if ms.peerURLInUse(ctx.PeerURLs, 0) {
			return rpctypes.ErrGRPCPeerURLExist
		}
	case raftpb.ConfChangeAddLearnerNode:
		if exists {
			return rpctypes.ErrGRPCMemberExist
		}
		if ctx == nil || ctx.ID != id {
			return rpctypes.ErrGRPCMemberBadURLs
		}
		if ms.peerURLInUse(ctx.PeerURLs, 0) {
			return rpctypes.ErrGRPCPeerURLExist
		}
		if ms.learners() >= maxLearners {
			return rpctypes.ErrGRPCTooManyLearners
		}
	case raftpb.ConfChangeRemoveNode:
		if !exists {
			return rpctypes.ErrGRPCMemberNotFound
		}
	case raftpb.ConfChangeUpdateNode:
		if !exists {
			return rpctypes.ErrGRPCMemberNotFound
		}
		if ctx == nil || ctx.ID != id {
			return rpctypes.ErrGRPCMemberBadURLs
		}
		if ms.peerURLInUse(ctx.PeerURLs, id) {
			return rpctypes.ErrGRPCPeerURLExist
		}
	default:
		return fmt.Errorf("node: unknown conf change type %v", cc.GetType())
	}
	return nil
}

// applyConfChange changes the member table for a validated conf change.
// It reports whether the local member was removed.
func (ms *membership) applyConfChange(cc *raftpb.ConfChange, ctx *Member, self uint64) (removedSelf bool) {
	id := cc.GetNodeId()
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode:
		if m, ok := ms.get(id); ok {
			m.IsLearner = false
			ms.put(m)
			return false
		}
		m := *ctx
		m.IsLearner = false
		ms.put(m)
	case raftpb.ConfChangeAddLearnerNode:
		m := *ctx
		m.IsLearner = true
		ms.put(m)
	case raftpb.ConfChangeRemoveNode:
		ms.remove(id)
		return id == self
	case raftpb.ConfChangeUpdateNode:
		m, _ := ms.get(id)
		m.PeerURLs = slices.Clone(ctx.PeerURLs)
		ms.put(m)
	}
	return false
}

// MembersAtCommit returns the member table as it will be once every
// committed entry is applied, and the IDs removed from it by then: the
// applied table, with the conf changes of the committed entries not yet
// applied replayed over a copy exactly as applying them will (an invalid
// one is a no-op). A restarted member applies its log only after it
// starts; its host hands these to the peer transport first, so that no
// member the committed log names is refused as unknown meanwhile.
func (n *Node) MembersAtCommit() ([]Member, []uint64) {
	ms := membership{members: slices.Clone(n.members.members), removed: slices.Clone(n.members.removed)}
	// Committed entries not yet in storage (a bootstrap's, which raft holds
	// until its first Ready) are not looked at: the host knows those
	// members from its bootstrap list.
	last, _ := n.storage.LastIndex()
	upTo := min(n.rn.BasicStatus().GetCommit(), last)
	if upTo <= n.appliedIndex {
		return ms.members, ms.removed
	}
	ents, err := n.storage.Entries(n.appliedIndex+1, upTo+1, math.MaxUint64)
	if err != nil {
		// Compacted or unavailable: the applied table is all there is.
		return ms.members, ms.removed
	}
	for _, e := range ents {
		if e.GetType() != raftpb.EntryConfChange {
			continue
		}
		var cc raftpb.ConfChange
		if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
			continue
		}
		ctx, err := decodeConfChangeContext(cc.GetContext())
		if err == nil {
			err = ms.validateConfChange(&cc, ctx, n.cfg.MaxLearners)
		}
		if err == nil {
			ms.applyConfChange(&cc, ctx, n.cfg.ID)
		}
	}
	return ms.members, ms.removed
}

// confChangeContext encodes the member a conf change is about, as etcd
// carries it in ConfChange.Context.
func confChangeContext(m Member) []byte {
	data, err := proto.Marshal(m.proto())
	if err != nil {
		panic(fmt.Sprintf("node: marshal member %x: %v", m.ID, err))
	}
	return data
}

func decodeConfChangeContext(data []byte) (*Member, error) {
	if len(data) == 0 {
		return nil, nil
	}
	var p pb.Member
	if err := proto.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("node: conf change context: %w", err)
	}
	m := memberFromProto(&p)
	return &m, nil
}

package server

import (
	"fmt"
	"slices"

	"go.etcd.io/raft/v3"
	"go.uber.org/zap"

	"github.com/noded/noded/node"
)

// The lines operators' scripts wait on, in etcd's wording and with etcd's
// fields: leader changes (raft's node, logger "raft"), members added and
// removed (etcd's membership store), and this member's attributes
// published (etcd's server, just before "ready to serve client requests").

// logLeaderChange logs a change of leader as etcd's raft node does.
func (m *Member) logLeaderChange(from, to, term uint64) {
	lg := m.lg.Named("raft")
	switch {
	case from == raft.None:
		lg.Info(fmt.Sprintf("raft.node: %x elected leader %x at term %d", m.id, to, term))
	case to == raft.None:
		lg.Info(fmt.Sprintf("raft.node: %x lost leader %x at term %d", m.id, from, term))
	default:
		lg.Info(fmt.Sprintf("raft.node: %x changed leader from %x to %x at term %d", m.id, from, to, term))
	}
}

// logMembershipChanges logs members added to and removed from the applied
// member table between two published states. An empty table (a joining
// member before its first snapshot) is no change.
func (m *Member) logMembershipChanges(before, after []node.Member) {
	if len(before) == 0 || len(after) == 0 || sameMemberIDs(before, after) {
		return
	}
	has := func(ms []node.Member, id uint64) (node.Member, bool) {
		i := slices.IndexFunc(ms, func(x node.Member) bool { return x.ID == id })
		if i < 0 {
			return node.Member{}, false
		}
		return ms[i], true
	}
	// etcd's field names: added-peer-* and removed-remote-peer-*.
	logChange := func(msg, field string, mem node.Member) {
		m.lg.Info(msg,
			zap.String("cluster-id", fmt.Sprintf("%x", m.clusterID)),
			zap.String("local-member-id", fmt.Sprintf("%x", m.id)),
			zap.String(field+"-id", fmt.Sprintf("%x", mem.ID)),
			zap.Strings(field+"-peer-urls", mem.PeerURLs),
			zap.Bool(field+"-is-learner", mem.IsLearner))
	}
	for _, mem := range after {
		if _, ok := has(before, mem.ID); !ok {
			logChange("added member", "added-peer", mem)
		}
	}
	for _, mem := range before {
		if _, ok := has(after, mem.ID); !ok {
			logChange("removed member", "removed-remote-peer", mem)
		}
	}
}

func sameMemberIDs(a, b []node.Member) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID {
			return false
		}
	}
	return true
}

// logPublished logs this member's attributes reaching the applied member
// table, as etcd logs its publish request's success.
func (m *Member) logPublished(self node.Member) {
	m.lg.Info("published local member to cluster through raft",
		zap.String("local-member-id", fmt.Sprintf("%x", m.id)),
		zap.String("local-member-attributes", fmt.Sprintf("{Name:%s ClientURLs:%v}", self.Name, self.ClientURLs)),
		zap.String("cluster-id", fmt.Sprintf("%x", m.clusterID)))
}

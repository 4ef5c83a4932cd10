package sim

import (
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/node"
)

// operator replaces members under load, as an operator does with
// `member remove`, `member add [--learner]`, starting the new member with
// an empty data directory, and `member promote` (M1, M2). It works by
// reconciliation: every round it reads the member table one running member
// has applied, decides the next step, and (re)sends the request for it, so
// lost requests, timeouts and leader changes only cost a round.
type operator struct {
	active  bool
	step    operatorStep
	target  *member // being removed
	url     string  // the joining member's peer URL
	learner bool
	joining *member
	seq     uint64
	joined  int
	// tableApplied is the applied index of the newest member table read.
	// A table applied at a lower index (a member restarting, replaying its
	// log) says less than one already read and is ignored: it could show a
	// learner not yet added, or a member not yet there.
	tableApplied uint64
}

type operatorStep uint8

const (
	stepRemove operatorStep = iota
	stepAdd
	stepPromote
)

// operatorHandleBit marks the operator's request handles apart from the
// clients'.
const operatorHandleBit = 1 << 62

func (o *operator) idle() bool { return !o.active }

func (o *operator) start(w *world) {
	if o.active {
		return
	}
	// Now and then, lighter work than a replacement: move the leadership
	// to another voter, or give a member a new peer URL. Neither waits for
	// an outcome; the checkers and the liveness phase judge the cluster.
	switch w.frng.IntN(4) {
	case 0:
		if l := w.leader(); l != nil {
			if t := w.randomMember(func(m *member) bool { return m.up && m != l && !w.isLearner(m) }); t != nil {
				w.tracef("operator: move leader %s -> %s", l.name, t.name)
				o.sendTo(w, l, &pb.MoveLeaderRequest{TargetID: t.id})
				return
			}
		}
	case 1:
		if m := w.randomMember(func(m *member) bool { return m.up }); m != nil {
			m.peerURL = fmt.Sprintf("http://m%d-%d:2380", m.index, w.now)
			w.tracef("operator: update %s peer URL to %s", m.name, m.peerURL)
			o.send(w, &pb.MemberUpdateRequest{ID: m.id, PeerURLs: []string{m.peerURL}}, false)
			return
		}
	}
	if o.joined >= maxJoinedMembers {
		return
	}
	target := w.randomMember(func(m *member) bool { return !m.failStopped })
	if target == nil {
		return
	}
	o.active = true
	o.step = stepRemove
	o.target = target
	o.url = fmt.Sprintf("http://m%d:2380", len(w.members))
	o.learner = w.frng.IntN(2) == 0
	o.joining = nil
	w.stats.MemberChanges++
	w.tracef("operator: replace %s with a new %s at %s", target.name, map[bool]string{true: "learner", false: "voter"}[o.learner], o.url)
	o.round(w)
}

// table reads the member table of the running member that has applied the
// most, and the index it applied up to. (A member removed while it was cut
// off never learns it and keeps the old table; reading its table would
// wait on it forever.)
func (w *world) table() ([]node.Member, uint64) {
	var best *node.Status
	for _, m := range w.members {
		if m.up && !m.removed && m.node != nil {
			st := m.node.Status()
			if best == nil || st.AppliedIndex > best.AppliedIndex {
				best = &st
			}
		}
	}
	if best == nil {
		return nil, 0
	}
	return best.Members, best.AppliedIndex
}

func (o *operator) round(w *world) {
	if !o.active {
		return
	}
	table, applied := w.table()
	if table == nil || applied < o.tableApplied {
		o.again(w)
		return
	}
	o.tableApplied = applied
	find := func(pred func(node.Member) bool) (node.Member, bool) {
		for _, m := range table {
			if pred(m) {
				return m, true
			}
		}
		return node.Member{}, false
	}
	switch o.step {
	case stepRemove:
		if _, present := find(func(m node.Member) bool { return m.ID == o.target.id }); !present {
			w.tracef("operator: %s removed", o.target.name)
			if o.target.up {
				w.crash(o.target, "decommissioned")
			}
			o.target.removed = true
			o.step = stepAdd
			o.round(w)
			return
		}
		o.send(w, &pb.MemberRemoveRequest{ID: o.target.id}, false)
	case stepAdd:
		if nm, present := find(func(m node.Member) bool { return len(m.PeerURLs) > 0 && m.PeerURLs[0] == o.url }); present {
			if o.joining == nil {
				o.joining = w.newMember(len(w.members), o.url, nm.ID)
				w.members = append(w.members, o.joining)
				o.joined++
				w.tracef("operator: %s added as %x, starting it empty", o.joining.name, nm.ID)
				w.join(o.joining)
			}
			if nm.IsLearner {
				o.step = stepPromote
			} else {
				o.done(w)
				return
			}
			o.again(w)
			return
		}
		o.send(w, &pb.MemberAddRequest{PeerURLs: []string{o.url}, IsLearner: o.learner}, false)
	case stepPromote:
		if nm, present := find(func(m node.Member) bool { return m.ID == o.joining.id }); !present || !nm.IsLearner {
			o.done(w)
			return
		}
		o.send(w, &pb.MemberPromoteRequest{ID: o.joining.id}, true)
	}
	o.again(w)
}

func (w *world) isLearner(m *member) bool {
	table, _ := w.table()
	for _, tm := range table {
		if tm.ID == m.id {
			return tm.IsLearner
		}
	}
	return false
}

func (o *operator) done(w *world) {
	w.tracef("operator: replacement done")
	o.active = false
}

// again schedules the next round after an election timeout or so.
func (o *operator) again(w *world) {
	o.seq++
	seq := o.seq
	w.after(w.electionNs()+w.frng.Int64N(w.electionNs()+1), "operator round", func() {
		if o.seq == seq {
			o.round(w)
		}
	})
}

// send submits a request at some running member (the leader for promote,
// which only it can judge). The answer is ignored: the next round reads
// the member table to see what happened.
func (o *operator) send(w *world, req proto.Message, leaderOnly bool) {
	target := w.leader()
	if target == nil || (!leaderOnly && w.frng.IntN(2) == 0) {
		target = w.randomMember(func(m *member) bool { return m.up && !m.paused })
	}
	if target == nil {
		return
	}
	o.sendTo(w, target, req)
}

func (o *operator) sendTo(w *world, m *member, req proto.Message) {
	o.seq++
	h := node.Handle(operatorHandleBit | o.seq)
	w.after(w.clientLatency(), "operator request", func() {
		if m.up && !m.paused && m.node != nil {
			w.submitAs(m, h, req)
			w.drive(m)
		}
	})
}

package sim

import (
	"github.com/noded/noded/linearizability"
	"github.com/noded/noded/node"
	"strconv"
)

// The liveness phase: every fault is undone (the network heals, paused
// members resume, crashed ones restart), no new work starts but each
// client's final linearizable read, and within LivenessMs every request
// must be answered and every running member must reach the same state hash
// at the same applied index.

func (w *world) startLiveness() {
	w.phase = phaseLiveness
	w.livenessStart = w.now
	w.tracef("liveness: healing everything")
	w.net.HealAll()
	w.net.LossPermille, w.net.DupPermille = 0, 0
	for _, m := range w.members {
		m.tickJumpUntil = 0
		if m.paused {
			w.resume(m)
		}
		if !m.up && !m.failStopped && !m.removed {
			w.restart(m)
		}
	}
	for _, c := range w.clients {
		if c.op == nil {
			w.scheduleClient(c, 0)
		}
	}
	w.after(w.k.LivenessMs*1e6, "liveness deadline", func() {
		if w.phase == phaseLiveness {
			w.fail("liveness", "not converged %dms after healing: %s", w.k.LivenessMs, w.convergenceState())
		}
	})
}

func (w *world) checkLiveness() {
	if w.phase != phaseLiveness || !w.operator.idle() {
		return
	}
	for _, c := range w.clients {
		if !c.final || c.op != nil {
			return
		}
	}
	var applied uint64
	var ref *member
	for _, m := range w.members {
		if m.removed || m.failStopped {
			continue
		}
		if !m.up || m.paused || len(m.syncQueue) > 0 {
			return
		}
		st := m.node.Status()
		if st.Removed || st.Lead == 0 {
			return
		}
		if ref == nil {
			ref, applied = m, st.AppliedIndex
			continue
		}
		if st.AppliedIndex != applied || st.CommitIndex != applied {
			return
		}
	}
	if ref == nil {
		w.fail("liveness", "no member is running")
		return
	}
	refHash := ref.node.StateHash()
	for _, m := range w.members {
		if m == ref || m.removed || m.failStopped {
			continue
		}
		if h := m.node.StateHash(); h != refHash {
			w.fail("state-hash", "state hashes differ at applied index %d: %s has %016x, %s has %016x", applied, ref.name, refHash, m.name, h)
			return
		}
	}
	w.tracef("converged at applied index %d, state %016x", applied, refHash)
	w.stats.LivenessNs = w.now - w.livenessStart
	w.phase = phaseDone
}

func (w *world) convergenceState() string {
	s := ""
	for _, m := range w.members {
		switch {
		case m.removed:
			s += m.name + "=removed "
		case m.failStopped:
			s += m.name + "=fail-stopped "
		case !m.up:
			s += m.name + "=down "
		default:
			s += m.node.Status().String() + "; "
		}
	}
	for _, c := range w.clients {
		if !c.final {
			s += "client " + strconv.Itoa(c.index) + " not done; "
		}
	}
	return s
}

func (w *world) leaseEvent(m *member, le node.LeaseEvent) {
	var kind linearizability.LeaseEventKind
	switch le.Kind {
	case node.LeaseGranted:
		kind = linearizability.LeaseGranted
	case node.LeaseKeepAliveAcked:
		kind = linearizability.LeaseKeepAliveAcked
	case node.LeaseBecameLeader:
		kind = linearizability.LeaseBecameLeader
	case node.LeaseExpiryProposed:
		kind = linearizability.LeaseExpiryProposed
	case node.LeaseTakenOver:
		kind = linearizability.LeaseTakenOver
	}
	w.leaseEvents = append(w.leaseEvents, linearizability.LeaseEvent{
		Member: m.id, LocalTick: m.tickBase + le.LocalTick, Lease: le.Lease, Kind: kind, TTLTicks: le.TTLTicks,
		ElectionTicks: int64(w.k.ElectionTicks),
	})
}

package disk

import (
	"fmt"
	"strings"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// logModel is the reference the crash sweep and the rapid test check
// Storage against: the raft state as a plain list, advanced one record at a
// time in the order Storage writes records. states[r] describes the state
// after the first r records; after a crash, Open must return exactly one of
// the states from the last acknowledged one to the last issued one.
type logModel struct {
	base     uint64 // log[i] has index base+1+i
	log      []*raftpb.Entry
	hs       *raftpb.HardState
	snap     *raftpb.SnapshotMetadata
	states   []string
	acked    int // states[acked] and everything before it is durable
	finished bool
}

func newLogModel() *logModel {
	m := &logModel{}
	m.states = []string{m.describe()}
	return m
}

func (m *logModel) record() { m.states = append(m.states, m.describe()) }

func (m *logModel) entry(e *raftpb.Entry) {
	i := e.GetIndex()
	if i <= m.base { // only after a reset or release in the model's past: not produced by the workloads
		panic(fmt.Sprintf("model: entry %d at or below base %d", i, m.base))
	}
	m.log = append(m.log[:i-m.base-1], e)
	m.record()
}

func (m *logModel) hardState(hs *raftpb.HardState) {
	m.hs = proto.Clone(hs).(*raftpb.HardState)
	m.record()
}

func (m *logModel) termAt(i uint64) (uint64, bool) {
	if i <= m.base || i > m.base+uint64(len(m.log)) {
		return 0, false
	}
	return m.log[i-m.base-1].GetTerm(), true
}

func (m *logModel) last() uint64 { return m.base + uint64(len(m.log)) }

func (m *logModel) snapshot(index, term uint64) {
	t, ok := m.termAt(index)
	if index > m.last() || (ok && t != term) {
		m.base, m.log = index, nil
	}
	m.snap = &raftpb.SnapshotMetadata{Index: proto.Uint64(index), Term: proto.Uint64(term)}
	m.record()
}

func (m *logModel) ack() { m.acked = len(m.states) - 1 }

func (m *logModel) describe() string {
	return describeState(m.snap, m.hs, m.log)
}

// describeState renders what Open returns: the snapshot, the hard state
// with its commit raised to the snapshot, and the entries after the snapshot.
func describeState(snap *raftpb.SnapshotMetadata, hs *raftpb.HardState, log []*raftpb.Entry) string {
	var b strings.Builder
	snapIndex := uint64(0)
	if snap != nil {
		snapIndex = snap.GetIndex()
		fmt.Fprintf(&b, "snap=%d/%d ", snap.GetIndex(), snap.GetTerm())
	}
	if hs != nil {
		fmt.Fprintf(&b, "hs=%d/%d/%d ", hs.GetTerm(), hs.GetVote(), max(hs.GetCommit(), snapIndex))
	}
	b.WriteString("log=")
	for _, e := range log {
		if e.GetIndex() > snapIndex {
			fmt.Fprintf(&b, "%d/%d:%s,", e.GetIndex(), e.GetTerm(), e.GetData())
		}
	}
	return b.String()
}

func describeRecovered(rec Recovered) string {
	return describeState(rec.Snapshot.GetMetadata(), rec.HardState, rec.Entries)
}

// match returns r such that states[r] equals the recovered state and
// acked <= r, or -1.
func (m *logModel) match(rec Recovered) int {
	got := describeRecovered(rec)
	for r := len(m.states) - 1; r >= m.acked; r-- {
		if m.states[r] == got {
			return r
		}
	}
	return -1
}

// reset makes the model's current state the one recovered at states[r]:
// after a reopen, the history before is settled.
func (m *logModel) settle(r int, rec Recovered) {
	m.states = []string{m.states[r]}
	m.acked = 0
	m.hs = nil
	if rec.HardState != nil {
		m.hs = proto.Clone(rec.HardState).(*raftpb.HardState)
	}
	m.snap = nil
	m.base = 0
	if rec.Snapshot != nil {
		m.snap = rec.Snapshot.GetMetadata()
		m.base = m.snap.GetIndex()
	}
	m.log = append([]*raftpb.Entry(nil), rec.Entries...)
	if len(m.log) > 0 {
		m.base = m.log[0].GetIndex() - 1
	}
	m.states[0] = m.describe()
}

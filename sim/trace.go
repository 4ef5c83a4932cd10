package sim

import (
	"encoding/binary"
	"fmt"
	"io"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/noded/noded/node"
)

// traceHash folds every event a run processes and every effect its members
// produce into one 64-bit hash: two runs with equal hashes took the same
// steps. It hashes the fields that matter as integers, a word at a time
// (an FNV-style multiply and an xorshift per word, not per byte: it runs
// for every step of every run), so a run pays for hashing, not for
// formatting; only when a trace writer is set does it also render each
// step as a line of text. The hash is the same with or without the writer.
type traceHash struct {
	h   uint64
	out io.Writer
	buf []byte
}

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

func newTraceHash(out io.Writer) traceHash {
	return traceHash{h: fnvOffset64, out: out}
}

func (t *traceHash) u64(v uint64) {
	t.h = (t.h ^ v) * fnvPrime64
	t.h ^= t.h >> 29
}

func (t *traceHash) i64(v int64) { t.u64(uint64(v)) }

func (t *traceHash) str(s string) {
	t.u64(uint64(len(s)))
	for len(s) >= 8 {
		t.u64(binary.LittleEndian.Uint64([]byte(s[:8])))
		s = s[8:]
	}
	var tail uint64
	for i := 0; i < len(s); i++ {
		tail |= uint64(s[i]) << (8 * i)
	}
	t.u64(tail)
}

func (t *traceHash) sum() uint64 { return t.h }

func (t *traceHash) text(now int64, s string) {
	if t.out == nil {
		return
	}
	t.buf = fmt.Appendf(t.buf[:0], "%d %s\n", now, s)
	_, _ = t.out.Write(t.buf)
}

// line hashes (and, when tracing, prints) a free-form line: faults,
// restarts, phase changes. These are rare, so formatting them is cheap.
func (t *traceHash) line(now int64, s string) {
	t.i64(now)
	t.str(s)
	t.text(now, s)
}

func (t *traceHash) message(m *raftpb.Message) {
	t.u64(uint64(m.GetType()))
	t.u64(m.GetFrom())
	t.u64(m.GetTo())
	t.u64(m.GetTerm())
	t.u64(m.GetLogTerm())
	t.u64(m.GetIndex())
	t.u64(m.GetCommit())
	t.u64(m.GetVote())
	if m.GetReject() {
		t.u64(1)
	}
	t.u64(uint64(len(m.GetEntries())))
	for _, e := range m.GetEntries() {
		t.u64(e.GetIndex())
		t.u64(e.GetTerm())
		t.u64(uint64(len(e.GetData())))
	}
	if s := m.GetSnapshot(); s != nil {
		t.u64(s.GetMetadata().GetIndex())
		t.u64(s.GetMetadata().GetTerm())
	}
}

func (t *traceHash) event(now int64, e *event) {
	t.i64(now)
	t.u64(uint64(e.kind))
	t.i64(int64(e.member))
	t.i64(int64(e.incarnation))
	t.i64(int64(e.client))
	t.u64(e.opSeq)
	t.u64(e.persistSeq)
	t.u64(e.stream)
	t.str(e.what)
	if e.kind == evDeliver {
		t.message(e.msg)
	}
	if t.out == nil {
		return
	}
	switch e.kind {
	case evDeliver:
		m := e.msg
		t.text(now, fmt.Sprintf("deliver %s %x->%x term=%d index=%d logterm=%d commit=%d ents=%d reject=%t",
			m.GetType(), m.GetFrom(), m.GetTo(), m.GetTerm(), m.GetIndex(), m.GetLogTerm(), m.GetCommit(), len(m.GetEntries()), m.GetReject()))
	case evTick, evDiskSync:
		t.text(now, fmt.Sprintf("%s m%d/%d %d", e.kind, e.member, e.incarnation, e.persistSeq))
	default:
		t.text(now, fmt.Sprintf("%s m%d c%d op%d %s", e.kind, e.member, e.client, e.opSeq, e.what))
	}
}

func headerOf(resp any) *pb.ResponseHeader {
	type headered interface{ GetHeader() *pb.ResponseHeader }
	if h, ok := resp.(headered); ok && h != nil {
		return h.GetHeader()
	}
	return nil
}

func (w *world) traceEffects(m *member, eff *node.Effects) {
	if eff.Empty() {
		return
	}
	t := &w.trace
	t.i64(w.now)
	t.i64(int64(m.index))
	for _, p := range eff.Persist {
		t.u64(p.Seq)
		if p.Wait {
			t.u64(1)
		}
		if hs := p.HardState; hs != nil {
			t.u64(hs.GetTerm())
			t.u64(hs.GetVote())
			t.u64(hs.GetCommit())
		}
		for _, e := range p.Entries {
			t.u64(e.GetIndex())
			t.u64(e.GetTerm())
		}
		if p.Snapshot != nil {
			t.u64(p.Snapshot.GetMetadata().GetIndex())
		}
	}
	for _, msg := range eff.Messages {
		t.message(msg)
	}
	for _, r := range eff.Results {
		t.u64(uint64(r.Handle))
		if r.Err != nil {
			t.str(r.Err.Error())
		} else if h := headerOf(r.Resp); h != nil {
			t.i64(h.GetRevision())
			t.u64(h.GetRaftTerm())
		}
	}
	for _, sr := range eff.Watch {
		t.u64(uint64(sr.Stream))
		t.i64(sr.Resp.GetWatchId())
		t.i64(sr.Resp.GetHeader().GetRevision())
		t.i64(sr.Resp.GetCompactRevision())
		for _, ev := range sr.Resp.GetEvents() {
			t.u64(uint64(ev.GetType()))
			t.i64(ev.GetKv().GetModRevision())
			t.str(string(ev.GetKv().GetKey()))
		}
	}
	if eff.SaveSnapshot != nil {
		t.u64(eff.SaveSnapshot.Metadata.GetIndex())
	}
	for _, p := range eff.Proposed {
		t.u64(uint64(p.Handle))
		t.u64(p.RequestID)
	}
	for _, a := range eff.Applied {
		t.u64(a.Index)
		t.u64(a.Term)
		t.u64(a.RequestID)
		t.i64(a.Rev)
	}
	for _, le := range eff.LeaseEvents {
		t.u64(uint64(le.Kind))
		t.i64(le.Lease)
		t.i64(le.LocalTick)
	}
	if eff.Removed {
		t.u64(1)
	}
	if t.out != nil {
		t.text(w.now, fmt.Sprintf("effects m%d\n%s", m.index, eff.String()))
	}
}

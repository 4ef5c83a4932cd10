package node

import (
	"fmt"
	"math"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/noded/noded/kvsm"
)

// Repacking raft's in-memory log. The log keeps the last
// SnapshotCatchUpEntries applied entries for followers a little behind.
// Each was allocated as its proposal arrived, as a message and three
// field allocations beside the decoded request, the reply and the rest of
// that request's short-lived memory of the same sizes. Once that memory is
// collected, every kept entry pins a span that is otherwise free: a few
// thousand kept entries of a few hundred bytes hold several megabytes of
// spans the runtime cannot return. An idle member copies the kept entries
// into a few dense blocks (RepackLog) before it returns its free memory.

// RepackLog replaces every entry in raft's in-memory log with an equal
// copy, all of them in a few densely filled blocks, and returns how many it
// copied. The log's content is unchanged (same indexes, terms, types and
// data, and the same fields set), so raft and every follower see nothing;
// it is not replicated state and members need not agree on when they do
// it. The host calls it when the member is idle, like RepackStep.
func (n *Node) RepackLog() int {
	first, _ := n.storage.FirstIndex()
	last, _ := n.storage.LastIndex()
	if last < first {
		return 0
	}
	ents, err := n.storage.Entries(first, last+1, math.MaxUint64)
	if err != nil {
		panic(fmt.Sprintf("node %x: read log [%d, %d] to repack: %v", n.cfg.ID, first, last, err))
	}
	packed := packEntries(ents)
	if err := n.storage.Append(packed); err != nil {
		panic(fmt.Sprintf("node %x: replace log [%d, %d] with its repacked copy: %v", n.cfg.ID, first, last, err))
	}
	return len(packed)
}

// packEntries returns copies of ents whose messages, fields and data live
// in four allocations in all. Data above kvsm.RepackValueBytesMax is
// shared with the original, not copied: it fills its own spans already,
// and copying it would only stall the loop and hold it twice a while. A field that is unset in the original is unset in its copy, and
// nil data stays nil, so a copy encodes to the same bytes.
func packEntries(ents []*raftpb.Entry) []*raftpb.Entry {
	dataBytes := 0
	for _, e := range ents {
		if len(e.Data) <= kvsm.RepackValueBytesMax {
			dataBytes += len(e.Data)
		}
	}
	msgs := make([]raftpb.Entry, len(ents))
	numbers := make([]uint64, 2*len(ents)) // term, index per entry
	types := make([]raftpb.EntryType, len(ents))
	data := make([]byte, 0, dataBytes)
	out := make([]*raftpb.Entry, len(ents))
	for i, e := range ents {
		c := &msgs[i]
		if e.Term != nil {
			numbers[2*i] = *e.Term
			c.Term = &numbers[2*i]
		}
		if e.Index != nil {
			numbers[2*i+1] = *e.Index
			c.Index = &numbers[2*i+1]
		}
		if e.Type != nil {
			types[i] = *e.Type
			c.Type = &types[i]
		}
		switch {
		case len(e.Data) > kvsm.RepackValueBytesMax:
			c.Data = e.Data
		case e.Data != nil:
			start := len(data)
			data = append(data, e.Data...)
			// A full slice expression: nothing appended to one entry's
			// data can reach the next one's.
			c.Data = data[start:len(data):len(data)]
		}
		out[i] = c
	}
	return out
}

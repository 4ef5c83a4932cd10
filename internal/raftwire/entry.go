// Package raftwire decodes raft log entries in the shapes noded writes and
// sends (each of Type, Term, Index, Data at most once, Type a known
// value), with fewer allocations than proto.Unmarshal: the WAL replays
// every entry after the last snapshot on a restart, and followers decode
// every entry the leader streams. Callers fall back to proto.Unmarshal
// for anything ScanEntry refuses.
//
// raftwire may import the standard library, go.etcd.io/raft/v3/raftpb and
// google.golang.org/protobuf; disk and net import it.
package raftwire

import (
	"google.golang.org/protobuf/encoding/protowire"

	"go.etcd.io/raft/v3/raftpb"
)

// EntryBlock is an entry and its scalars, allocated together.
type EntryBlock struct {
	Entry       raftpb.Entry
	typ         raftpb.EntryType
	term, index uint64
}

// ScanEntry checks that b is an entry Decode decodes (each of Type, Term,
// Index, Data at most once, Type a known value) and returns its data's
// length.
func ScanEntry(b []byte) (dataBytes int, ok bool) {
	var seen [5]bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num < 1 || num > 4 || seen[num] {
			return 0, false
		}
		seen[num] = true
		b = b[n:]
		if num == 4 {
			if typ != protowire.BytesType {
				return 0, false
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, false
			}
			dataBytes, b = len(v), b[n:]
			continue
		}
		if typ != protowire.VarintType {
			return 0, false
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return 0, false
		}
		if num == 1 {
			if _, known := raftpb.EntryType_name[int32(v)]; !known || v > 1<<31-1 {
				return 0, false
			}
		}
		b = b[n:]
	}
	return dataBytes, true
}

// Decode fills e from b, which ScanEntry accepted, with its data appended
// to data (which must have room for it, so that earlier entries' data
// stays where it is); it returns data. Nothing aliases b.
func (e *EntryBlock) Decode(b, data []byte) []byte {
	for len(b) > 0 {
		num, _, n := protowire.ConsumeTag(b)
		b = b[n:]
		if num == 4 {
			v, n := protowire.ConsumeBytes(b)
			b = b[n:]
			start := len(data)
			data = append(data, v...)
			e.Entry.Data = data[start:len(data):len(data)]
			continue
		}
		v, n := protowire.ConsumeVarint(b)
		b = b[n:]
		switch num {
		case 1:
			e.typ, e.Entry.Type = raftpb.EntryType(v), &e.typ
		case 2:
			e.term, e.Entry.Term = v, &e.term
		case 3:
			e.index, e.Entry.Index = v, &e.index
		}
	}
	return data
}

package disk

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"go.etcd.io/raft/v3/raftpb"
)

// decodeEntry is proto.Unmarshal of a raftpb.Entry as the log writes one
// (Type 1, Term 2, Index 3, Data 4, each at most once, Type a known
// value): the entry and its scalars in one allocation and its data in
// another, where proto.Unmarshal makes one per field through reflection. A
// restart decodes every entry after the last snapshot, up to
// --snapshot-count of them. Anything else is left to proto.Unmarshal.
func decodeEntry(b []byte) (*raftpb.Entry, error) {
	type block struct {
		e           raftpb.Entry
		typ         raftpb.EntryType
		term, index uint64
	}
	blk := &block{}
	var seen [5]bool
	rest := b
	for len(rest) > 0 {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 || num < 1 || num > 4 || seen[num] {
			return unmarshalEntry(b)
		}
		seen[num] = true
		rest = rest[n:]
		if num == 4 {
			if typ != protowire.BytesType {
				return unmarshalEntry(b)
			}
			v, n := protowire.ConsumeBytes(rest)
			if n < 0 {
				return unmarshalEntry(b)
			}
			blk.e.Data = append(make([]byte, 0, len(v)), v...)
			rest = rest[n:]
			continue
		}
		if typ != protowire.VarintType {
			return unmarshalEntry(b)
		}
		v, n := protowire.ConsumeVarint(rest)
		if n < 0 {
			return unmarshalEntry(b)
		}
		rest = rest[n:]
		switch num {
		case 1:
			if _, known := raftpb.EntryType_name[int32(v)]; !known || v > 1<<31-1 {
				return unmarshalEntry(b)
			}
			blk.typ = raftpb.EntryType(v)
			blk.e.Type = &blk.typ
		case 2:
			blk.term = v
			blk.e.Term = &blk.term
		case 3:
			blk.index = v
			blk.e.Index = &blk.index
		}
	}
	return &blk.e, nil
}

func unmarshalEntry(b []byte) (*raftpb.Entry, error) {
	e := &raftpb.Entry{}
	if err := proto.Unmarshal(b, e); err != nil {
		return nil, err
	}
	return e, nil
}

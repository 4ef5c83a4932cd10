package net

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/noded/noded/internal/raftwire"
)

// decodeMessage is proto.Unmarshal of a raft message in the shapes members
// send on message streams: scalars at most once each, entries with Type,
// Term, Index and Data at most once each, known enum values, no snapshot
// (snapshots have streams of their own) and no responses. The message and
// its scalars take one allocation, the entries two (their structs and the
// pointers to them) and all the entries' data one, where proto.Unmarshal
// makes one or more per field. Anything else is left to proto.Unmarshal.
// Nothing aliases b.
func decodeMessage(b []byte) (*raftpb.Message, error) {
	type block struct {
		m                                                  raftpb.Message
		typ                                                raftpb.MessageType
		to, from, term, logTerm, index, commit, vote, hint uint64
		reject                                             bool
	}
	// A first pass checks the shape and counts what the second allocates.
	entries, dataBytes := 0, 0
	var seen [15]bool
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 || num < 1 || num > 13 || num == 9 || (num != 7 && seen[num]) {
			return unmarshalMessage(b)
		}
		seen[num] = true
		rest = rest[n:]
		switch {
		case num == 7 || num == 12:
			if typ != protowire.BytesType {
				return unmarshalMessage(b)
			}
			v, n := protowire.ConsumeBytes(rest)
			if n < 0 {
				return unmarshalMessage(b)
			}
			rest = rest[n:]
			if num == 12 {
				continue
			}
			size, ok := raftwire.ScanEntry(v)
			if !ok {
				return unmarshalMessage(b)
			}
			entries++
			dataBytes += size
		default:
			if typ != protowire.VarintType {
				return unmarshalMessage(b)
			}
			v, n := protowire.ConsumeVarint(rest)
			if n < 0 {
				return unmarshalMessage(b)
			}
			rest = rest[n:]
			if num == 1 {
				if _, known := raftpb.MessageType_name[int32(v)]; !known || v > 1<<31-1 {
					return unmarshalMessage(b)
				}
			}
		}
	}

	blk := &block{}
	m := &blk.m
	var ents []raftwire.EntryBlock
	var data []byte
	if entries > 0 {
		ents = make([]raftwire.EntryBlock, entries)
		m.Entries = make([]*raftpb.Entry, 0, entries)
		data = make([]byte, 0, dataBytes)
	}
	for rest := b; len(rest) > 0; {
		num, _, n := protowire.ConsumeTag(rest)
		rest = rest[n:]
		if num == 7 || num == 12 {
			v, n := protowire.ConsumeBytes(rest)
			rest = rest[n:]
			if num == 12 {
				m.Context = append(make([]byte, 0, len(v)), v...)
				continue
			}
			e := &ents[len(m.Entries)]
			data = e.Decode(v, data)
			m.Entries = append(m.Entries, &e.Entry)
			continue
		}
		v, n := protowire.ConsumeVarint(rest)
		rest = rest[n:]
		switch num {
		case 1:
			blk.typ = raftpb.MessageType(v)
			m.Type = &blk.typ
		case 2:
			blk.to, m.To = v, &blk.to
		case 3:
			blk.from, m.From = v, &blk.from
		case 4:
			blk.term, m.Term = v, &blk.term
		case 5:
			blk.logTerm, m.LogTerm = v, &blk.logTerm
		case 6:
			blk.index, m.Index = v, &blk.index
		case 8:
			blk.commit, m.Commit = v, &blk.commit
		case 10:
			blk.reject, m.Reject = v != 0, &blk.reject
		case 11:
			blk.hint, m.RejectHint = v, &blk.hint
		case 13:
			blk.vote, m.Vote = v, &blk.vote
		}
	}
	return m, nil
}

func unmarshalMessage(b []byte) (*raftpb.Message, error) {
	m := &raftpb.Message{}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, err
	}
	return m, nil
}

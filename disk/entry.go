package disk

import (
	"google.golang.org/protobuf/proto"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/noded/noded/internal/raftwire"
)

// decodeEntry is proto.Unmarshal of a raftpb.Entry as the log writes one
// (raftwire: Type, Term, Index, Data each at most once, Type a known value):
// the entry and its scalars in one allocation and its data in another,
// where proto.Unmarshal makes one per field through reflection. A
// restart decodes every entry after the last snapshot, up to
// --snapshot-count of them. Anything else is left to proto.Unmarshal.
func decodeEntry(b []byte) (*raftpb.Entry, error) {
	dataBytes, ok := raftwire.ScanEntry(b)
	if !ok {
		return unmarshalEntry(b)
	}
	blk := &raftwire.EntryBlock{}
	// Non-nil even when empty: an entry with an empty Data field decodes
	// to an empty slice, as proto.Unmarshal gives it.
	blk.Decode(b, make([]byte, 0, dataBytes))
	return &blk.Entry, nil
}

func unmarshalEntry(b []byte) (*raftpb.Entry, error) {
	e := &raftpb.Entry{}
	if err := proto.Unmarshal(b, e); err != nil {
		return nil, err
	}
	return e, nil
}

package disk

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func ent(index, term uint64, data string) *raftpb.Entry {
	return &raftpb.Entry{Index: proto.Uint64(index), Term: proto.Uint64(term), Type: raftpb.EntryNormal.Enum(), Data: []byte(data)}
}

func hardState(term, vote, commit uint64) *raftpb.HardState {
	return &raftpb.HardState{Term: proto.Uint64(term), Vote: proto.Uint64(vote), Commit: proto.Uint64(commit)}
}

func snapshot(index, term uint64, data string) *raftpb.Snapshot {
	return &raftpb.Snapshot{
		Data: []byte(data),
		Metadata: &raftpb.SnapshotMetadata{
			Index: proto.Uint64(index), Term: proto.Uint64(term),
			ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}},
		},
	}
}

// ents builds entries first..last with the given term and data "e<index>t<term>".
func ents(first, last, term uint64) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := first; i <= last; i++ {
		out = append(out, ent(i, term, fmt.Sprintf("e%dt%d", i, term)))
	}
	return out
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

// describeEntries renders entries compactly for comparisons.
func describeEntries(es []*raftpb.Entry) string {
	s := ""
	for _, e := range es {
		s += fmt.Sprintf("%d/%d:%q ", e.GetIndex(), e.GetTerm(), e.GetData())
	}
	return s
}

func mustCreate(t testing.TB, fsys FS, opts Options) *Storage {
	t.Helper()
	s, err := Create(fsys, "wal", "snap", []byte("member-1"), opts)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return s
}

func mustOpen(t testing.TB, fsys FS, opts Options) (*Storage, Recovered) {
	t.Helper()
	s, rec, err := Open(fsys, "wal", "snap", opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s, rec
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// dataEndBytes returns where a file's data ends: the offset after its last
// non-zero byte (what Open reads of a segment; zeros after it are allocated
// space).
func dataEndBytes(t testing.TB, fsys FS, name string) int64 {
	t.Helper()
	data, _, err := readSegment(fsys, name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return int64(len(data))
}

// recordSizeFromHeader returns the size a record's sound header claims.
func recordSizeFromHeader(b []byte) int {
	return EncodedSizeBytes(int(binary.LittleEndian.Uint32(b[0:4])))
}

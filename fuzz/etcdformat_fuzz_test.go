package fuzz

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/disk"
	"github.com/noded/noded/disk/etcdformat"
	"github.com/noded/noded/kvsm"
)

// etcdFixture reads a file disk/etcdformat's tests use: real etcd 3.4 and
// 3.7 snapshots and member directories.
func etcdFixture(f *testing.F, name string) []byte {
	data, err := os.ReadFile(filepath.Join("..", "disk", "etcdformat", "testdata", name))
	if err != nil {
		f.Fatal(err)
	}
	return data
}

// nodedSnapshotSeed is a snapshot as noded's Snapshot stream sends it.
func nodedSnapshotSeed(f *testing.F) []byte {
	s := kvsm.New(kvsm.Config{})
	s.Apply(&pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: 7, TTL: 60}})
	s.Apply(&pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("a"), Value: []byte("1"), Lease: 7}})
	s.Apply(&pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("b"), Value: []byte("2")}})
	s.Apply(&pb.InternalRaftRequest{DeleteRange: &pb.DeleteRangeRequest{Key: []byte("b")}})
	s.Apply(&pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: 3}})
	path := filepath.Join(f.TempDir(), "snap")
	src := storeSource(s)
	src.ConsistentIndex, src.Term, src.ClusterVersion = 9, 2, "3.5.0"
	src.Members = []etcdformat.Member{{ID: 1, Name: "m", PeerURLs: []string{"http://127.0.0.1:2380"}}}
	src.ConfState = &raftpb.ConfState{Voters: []uint64{1}}
	err := etcdformat.WriteSnapshotFile(path, src)
	if err != nil {
		f.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	return data
}

// nodedV1Seed is the format noded's Snapshot stream sent before etcd's.
func nodedV1Seed() []byte {
	s := kvsm.New(kvsm.Config{})
	s.Apply(&pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("a"), Value: []byte("1")}})
	kv := s.Snapshot()
	data := append([]byte("NODEDKV1"), binary.BigEndian.AppendUint64(nil, uint64(len(kv)))...)
	data = append(data, kv...)
	data = append(data, make([]byte, (512-len(data)%512)%512)...)
	sum := sha256.Sum256(data)
	return append(data, sum[:]...)
}

// FuzzEtcdSnapshotRead writes arbitrary bytes to a file and reads it as a
// snapshot (etcd's bbolt database with or without its sha256 trailer, or
// noded's older format), checking the trailer or not. Reading must return
// an error or a state whose invariants hold, never panic or fault (a
// damaged database makes bbolt panic; the reader turns that into an
// error); a state read must write back as etcd's database and read back
// the same.
func FuzzEtcdSnapshotRead(f *testing.F) {
	for _, name := range []string{"etcd-3.4.snapshot", "etcd-3.7.snapshot", "etcd-3.7-member/member/snap/db"} {
		data := etcdFixture(f, name)
		f.Add(data, false)
		f.Add(data, true)
	}
	f.Add(nodedSnapshotSeed(f), false)
	f.Add(nodedV1Seed(), false)
	f.Add([]byte{}, true)
	f.Add(bytes.Repeat([]byte{0}, 8192), true)
	f.Fuzz(func(t *testing.T, data []byte, skipHashCheck bool) {
		dir := t.TempDir()
		path := filepath.Join(dir, "snap")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		st, s, err := readSnapshotStore(path, etcdformat.ReadOptions{SkipHashCheck: skipHashCheck})
		if err != nil {
			return
		}
		if err := s.CheckInvariants(); err != nil {
			t.Fatalf("a state read breaks an invariant: %v", err)
		}
		again := filepath.Join(dir, "again")
		src := storeSource(s)
		src.Members, src.Removed, src.ConsistentIndex, src.Term, src.ConfState = st.Members, st.Removed, st.ConsistentIndex, st.Term, st.ConfState
		if err := etcdformat.WriteSnapshotFile(again, src); err != nil {
			t.Fatalf("a state read does not write back: %v", err)
		}
		_, back, err := readSnapshotStore(again, etcdformat.ReadOptions{})
		if err != nil {
			t.Fatalf("a state written back does not read: %v", err)
		}
		if back.StateHash() != s.StateHash() {
			t.Fatal("a state written back reads differently")
		}
	})
}

// storeSink builds a kvsm.Store from what a read hands over (what
// server/etcddata does, which fuzz may not import).
type storeSink struct{ b *kvsm.Builder }

func (k storeSink) AddRevision(r etcdformat.Revision) error { return k.b.AddRevision(kvsm.Revision(r)) }
func (k storeSink) MarkRevision(rev int64)                  { k.b.MarkRevision(rev) }
func (k storeSink) AddLease(l etcdformat.Lease) error       { return k.b.AddLease(l.ID, l.GrantedTTLSeconds) }
func (k storeSink) AddAlarm(m uint64, a pb.AlarmType) error { return k.b.AddAlarm(m, a) }

func readSnapshotStore(path string, opts etcdformat.ReadOptions) (*etcdformat.State, *kvsm.Store, error) {
	sink := storeSink{kvsm.NewBuilder(kvsm.Config{})}
	st, err := etcdformat.ReadSnapshot(path, opts, sink)
	if err != nil {
		return nil, nil, err
	}
	var s *kvsm.Store
	if st.NodedV1 != nil {
		s, err = kvsm.Restore(kvsm.Config{}, st.NodedV1)
	} else {
		s, err = sink.b.Build(0, st.CompactRev)
	}
	return st, s, err
}

func storeSource(s *kvsm.Store) *etcdformat.Source {
	v := s.View()
	src := &etcdformat.Source{
		Revisions: func(yield func(etcdformat.Revision) bool) {
			v.ScanRevisions(func(r kvsm.Revision) bool { return yield(etcdformat.Revision(r)) })
		},
		CompactRev: v.CompactRev(),
		Alarms:     s.Alarms(),
	}
	for _, l := range s.Leases() {
		src.Leases = append(src.Leases, etcdformat.Lease{ID: l.ID, GrantedTTLSeconds: l.GrantedTTLSeconds})
	}
	return src
}

// walFileSeparator splits FuzzEtcdWALRead's input into WAL files.
var walFileSeparator = []byte("\x00--etcd-wal-file--\x00")

// FuzzEtcdWALRead builds an etcd WAL directory from arbitrary bytes (split
// into files at walFileSeparator) and reads it from an index, then
// translates every entry. It must return an error or entries that follow
// the index without gaps, never panic, and translation must not panic
// either.
func FuzzEtcdWALRead(f *testing.F) {
	for _, v := range []string{"3.4", "3.7"} {
		f.Add(etcdFixture(f, "etcd-"+v+"-member/member/wal/0000000000000000-0000000000000000.wal"), uint64(0))
		f.Add(etcdFixture(f, "etcd-"+v+"-member/member/wal/0000000000000000-0000000000000000.wal"), uint64(35))
	}
	f.Add([]byte{}, uint64(0))
	f.Add(bytes.Repeat([]byte{0xff}, 64), uint64(1))
	f.Fuzz(func(t *testing.T, data []byte, from uint64) {
		fsys := disk.NewSimFS()
		if err := fsys.MkdirAll("wal"); err != nil {
			t.Fatal(err)
		}
		for i, piece := range bytes.Split(data, walFileSeparator) {
			if i >= 8 {
				break
			}
			name := filepath.Join("wal", walName(uint64(i), uint64(i)*10))
			w, err := fsys.Create(name)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(piece)
			w.Close()
		}
		w, err := etcdformat.ReadWAL(fsys, "wal", from)
		if err != nil {
			return
		}
		for i, e := range w.Entries {
			if e.GetIndex() != from+1+uint64(i) {
				t.Fatalf("entry %d has index %d, reading from %d", i, e.GetIndex(), from)
			}
			out, _, err := etcdformat.TranslateEntry(e, func(m etcdformat.Member) []byte { return []byte(m.Name) })
			if err == nil && (out.GetIndex() != e.GetIndex() || out.GetTerm() != e.GetTerm()) {
				t.Fatalf("entry %d/%d translated to %d/%d", e.GetIndex(), e.GetTerm(), out.GetIndex(), out.GetTerm())
			}
		}
	})
}

func walName(seq, index uint64) string {
	b := make([]byte, 0, 37)
	b = appendHex16(b, seq)
	b = append(b, '-')
	b = appendHex16(b, index)
	return string(append(b, ".wal"...))
}

func appendHex16(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[(v>>uint(shift))&0xf])
	}
	return b
}

// FuzzEtcdEntryTranslate translates arbitrary entry data of each type:
// an error or an entry at the same index and term, never a panic; a v3
// request kept stays byte for byte what it was.
func FuzzEtcdEntryTranslate(f *testing.F) {
	put, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 1}, Put: &pb.PutRequest{Key: []byte("k")}})
	cc, _ := proto.Marshal(&raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(31),
		Context: []byte(`{"id":31,"peerURLs":["http://x:2380"],"name":"n"}`)})
	f.Add(uint8(raftpb.EntryNormal), put)
	f.Add(uint8(raftpb.EntryConfChange), cc)
	f.Add(uint8(raftpb.EntryNormal), []byte("\x08\x2a\x12\x03PUT\x1a\x18/0/members/1f/attributes\x22\x0b{\"name\":\"a\"}"))
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		e := &raftpb.Entry{Index: proto.Uint64(5), Term: proto.Uint64(2), Type: raftpb.EntryType(typ % 3).Enum(), Data: data}
		out, kind, err := etcdformat.TranslateEntry(e, func(m etcdformat.Member) []byte { return []byte(m.Name) })
		if err != nil {
			return
		}
		if out.GetIndex() != 5 || out.GetTerm() != 2 || out.GetType() != e.GetType() {
			t.Fatalf("translated to %v", out)
		}
		if kind == etcdformat.EntryKept && !bytes.Equal(out.GetData(), data) {
			t.Fatal("a kept entry changed")
		}
	})
}

package etcdformat

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
)

// walWriter writes etcd's WAL record format, for tests that need WALs
// real etcd members do not leave behind (overwrites, damage at a chosen
// place, many files). Fixtures from real members check it agrees.
type walWriter struct {
	crc   uint32
	files [][]byte
}

func (w *walWriter) newFile() {
	w.files = append(w.files, nil)
	w.record(walCRC, nil) // the chain's value so far
}

func (w *walWriter) record(typ int64, data []byte) {
	crc := w.crc
	if typ != walCRC {
		crc = crc32.Update(w.crc, castagnoli, data)
		w.crc = crc
	}
	var rec []byte
	rec = protowire.AppendTag(rec, 1, protowire.VarintType)
	rec = protowire.AppendVarint(rec, uint64(typ))
	rec = protowire.AppendTag(rec, 2, protowire.VarintType)
	rec = protowire.AppendVarint(rec, uint64(crc))
	if data != nil {
		rec = protowire.AppendTag(rec, 3, protowire.BytesType)
		rec = protowire.AppendBytes(rec, data)
	}
	pad := (8 - len(rec)%8) % 8
	lenField := uint64(len(rec))
	if pad > 0 {
		lenField |= uint64(0x80|pad) << 56
	}
	f := &w.files[len(w.files)-1]
	*f = binary.LittleEndian.AppendUint64(*f, lenField)
	*f = append(*f, rec...)
	*f = append(*f, make([]byte, pad)...)
}

func (w *walWriter) metadata(node, cluster uint64) {
	b, _ := proto.Marshal(&pb.Metadata{NodeID: proto.Uint64(node), ClusterID: proto.Uint64(cluster)})
	w.record(walMetadata, b)
}

func (w *walWriter) entry(index, term uint64, data []byte) {
	b, _ := proto.Marshal(&raftpb.Entry{Index: proto.Uint64(index), Term: proto.Uint64(term), Type: raftpb.EntryNormal.Enum(), Data: data})
	w.record(walEntry, b)
}

func (w *walWriter) state(term, vote, commit uint64) {
	b, _ := proto.Marshal(&raftpb.HardState{Term: proto.Uint64(term), Vote: proto.Uint64(vote), Commit: proto.Uint64(commit)})
	w.record(walState, b)
}

func (w *walWriter) snapshot(index, term uint64) {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, index)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, term)
	w.record(walSnapshot, b)
}

// putData is a v3 put as etcd proposes it.
func putData(id uint64, key, value string) []byte {
	b, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: id}, Put: &pb.PutRequest{Key: []byte(key), Value: []byte(value)}})
	return b
}

// fixture is the path of a file in testdata.
func fixture(name string) string { return filepath.Join("testdata", name) }

// writeWithTrailer writes data and its sha256, as a snapshot file.
func writeWithTrailer(t *testing.T, path string, data []byte) {
	t.Helper()
	sum := sha256.Sum256(data)
	if err := os.WriteFile(path, append(append([]byte(nil), data...), sum[:]...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// sampleStore applies a seeded mix of puts, leased puts, deletes, txns,
// grants, revokes and a compaction, with lease IDs given as etcd gives
// them.
func sampleStore(seed uint64, steps int) *kvsm.Store {
	rng := rand.New(rand.NewPCG(seed, seed))
	s := kvsm.New(kvsm.Config{})
	var leases []int64
	for i := 0; i < steps; i++ {
		k := []byte(fmt.Sprintf("key/%02d", rng.IntN(30)))
		var r *pb.InternalRaftRequest
		switch n := rng.IntN(10); {
		case n < 5:
			r = &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: k, Value: []byte(fmt.Sprint("v", i))}}
			if len(leases) > 0 && rng.IntN(3) == 0 {
				r.Put.Lease = leases[rng.IntN(len(leases))]
			}
		case n < 7:
			r = &pb.InternalRaftRequest{DeleteRange: &pb.DeleteRangeRequest{Key: k}}
		case n < 8:
			r = &pb.InternalRaftRequest{Txn: &pb.TxnRequest{Success: []*pb.RequestOp{
				{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(string(k) + "a"), Value: []byte("t")}}},
				{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(string(k) + "b"), Value: nil}}},
			}}}
		case n < 9:
			id := int64(0x7000 + i)
			leases = append(leases, id)
			r = &pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: id, TTL: int64(60 + i)}}
		default:
			if len(leases) > 0 {
				j := rng.IntN(len(leases))
				r = &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: leases[j]}}
				leases = append(leases[:j], leases[j+1:]...)
			} else {
				r = &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: k}}
			}
		}
		s.Apply(r)
		if i == steps/2 {
			s.Apply(&pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: s.Rev() - 5}})
		}
	}
	return s
}

func sampleSource(s *kvsm.Store) *Source {
	src := storeSource(s)
	src.Members = []Member{
		{ID: 0x1111, Name: "a", PeerURLs: []string{"http://10.0.0.1:2380"}, ClientURLs: []string{"http://10.0.0.1:2379"}},
		{ID: 0x2222, PeerURLs: []string{"http://10.0.0.2:2380"}, IsLearner: true},
	}
	src.Removed = []uint64{0x3333}
	src.ConsistentIndex, src.Term = 12345, 7
	src.ConfState = &raftpb.ConfState{Voters: []uint64{0x1111}, Learners: []uint64{0x2222}}
	src.ClusterVersion = "3.5.17"
	return src
}

// storeSink builds a kvsm.Store from what a read hands over, as
// server/etcddata does.
type storeSink struct{ b *kvsm.Builder }

func (k storeSink) AddRevision(r Revision) error { return k.b.AddRevision(kvsm.Revision(r)) }
func (k storeSink) MarkRevision(rev int64)       { k.b.MarkRevision(rev) }
func (k storeSink) AddLease(l Lease) error       { return k.b.AddLease(l.ID, l.GrantedTTLSeconds) }
func (k storeSink) AddAlarm(m uint64, a pb.AlarmType) error {
	return k.b.AddAlarm(m, a)
}

// readStore reads a snapshot file into a store, and counts its live keys
// into the status.
func readStore(path string, opts ReadOptions) (*State, *kvsm.Store, error) {
	sink := storeSink{kvsm.NewBuilder(kvsm.Config{})}
	st, err := ReadSnapshot(path, opts, sink)
	return finishStore(st, sink, err)
}

func readDBStore(path string, opts ReadOptions) (*State, *kvsm.Store, error) {
	sink := storeSink{kvsm.NewBuilder(kvsm.Config{})}
	st, err := ReadDB(path, opts, sink)
	return finishStore(st, sink, err)
}

func finishStore(st *State, sink storeSink, err error) (*State, *kvsm.Store, error) {
	if err != nil {
		return nil, nil, err
	}
	var s *kvsm.Store
	if st.NodedV1 != nil {
		s, err = kvsm.Restore(kvsm.Config{}, st.NodedV1)
	} else {
		s, err = sink.b.Build(0, st.CompactRev)
	}
	if err != nil {
		return nil, nil, err
	}
	resp, _ := s.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true})
	st.Status.TotalKey = int(resp.GetCount())
	return st, s, nil
}

// storeSource writes a store.
func storeSource(s *kvsm.Store) *Source {
	v := s.View()
	src := &Source{
		Revisions: func(yield func(Revision) bool) {
			v.ScanRevisions(func(r kvsm.Revision) bool { return yield(Revision(r)) })
		},
		CompactRev:    v.CompactRev(),
		Alarms:        s.Alarms(),
		SizeHintBytes: s.SizeBytes(),
	}
	for _, l := range s.Leases() {
		src.Leases = append(src.Leases, Lease{ID: l.ID, GrantedTTLSeconds: l.GrantedTTLSeconds})
	}
	return src
}

package fuzz

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/noded/noded/kvsm"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// kvsmSnapshotMagic and the crc32c trailer are kvsm's documented snapshot
// framing (kvsm/snapshot.go). The fuzzer frames its bytes itself so that it
// reaches the decoder behind the checksum instead of stopping at it.
const kvsmSnapshotMagic = "kvsm-snapshot"

func frameKvsmSnapshot(body []byte) []byte {
	data := append([]byte(kvsmSnapshotMagic), body...)
	return binary.LittleEndian.AppendUint32(data, crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
}

// FuzzKvsmRestore: arbitrary bytes, raw and framed with a valid checksum,
// must restore to an error or to a store that holds its invariants,
// re-encodes to the same bytes and keeps working.
func FuzzKvsmRestore(f *testing.F) {
	for _, seed := range kvsmSnapshotSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, candidate := range [][]byte{data, frameKvsmSnapshot(data)} {
			s, err := kvsm.Restore(kvsm.Config{}, candidate)
			if err != nil {
				continue
			}
			if err := s.CheckInvariants(); err != nil {
				t.Fatalf("restored store breaks an invariant: %v", err)
			}
			if again := s.Snapshot(); !bytes.Equal(again, candidate) {
				t.Fatalf("snapshot does not round-trip: %d bytes in, %d out", len(candidate), len(again))
			}
			exerciseKvsm(t, s)
		}
	})
}

// FuzzKvsmApply: arbitrary bytes become a sequence of InternalRaftRequests
// (each a uvarint length and that many bytes; undecodable ones are skipped)
// applied to one store. Nothing may panic, invariants hold after every
// entry, a failed apply changes nothing, and the snapshot round-trips.
func FuzzKvsmApply(f *testing.F) {
	for _, seed := range kvsmApplySeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := kvsm.Config{MinLeaseTTLSeconds: 2}
		s := kvsm.New(cfg)
		s.WatchCreate(1, &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: 1, PrevKv: true})
		s.WatchCreate(1, &pb.WatchCreateRequest{Key: []byte("a"), ProgressNotify: true})
		for len(data) > 0 {
			n, used := binary.Uvarint(data)
			if used <= 0 || n > uint64(len(data)-used) {
				break
			}
			msg := data[used : used+int(n)]
			data = data[used+int(n):]
			r := &pb.InternalRaftRequest{}
			if proto.Unmarshal(msg, r) != nil {
				continue
			}
			_ = kvsm.Validate(cfg, r)
			before := s.StateHash()
			res := s.Apply(r)
			if res.Err != nil && s.StateHash() != before {
				t.Fatalf("failed apply changed the state: %s", res)
			}
			if res.Rev != s.Rev() {
				t.Fatalf("result revision %d, store %d", res.Rev, s.Rev())
			}
			_ = res.String()
			if err := s.CheckInvariants(); err != nil {
				t.Fatalf("after %s: %v", res, err)
			}
			if r.GetTxn() != nil {
				_, _ = s.ReadTxn(r.GetTxn())
			}
			s.WatchProgressNotify()
			for _, resp := range s.WatchPoll(64) {
				_ = resp.String()
			}
		}
		snap := s.Snapshot()
		r, err := kvsm.Restore(cfg, snap)
		if err != nil {
			t.Fatalf("restore of a fresh snapshot: %v", err)
		}
		if r.StateHash() != s.StateHash() || !bytes.Equal(r.Snapshot(), snap) {
			t.Fatal("snapshot does not round-trip")
		}
	})
}

// exerciseKvsm runs a few requests against a restored store.
func exerciseKvsm(t *testing.T, s *kvsm.Store) {
	all := &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}
	if _, err := s.Range(all); err != nil && s.Alarms() == nil {
		t.Fatalf("range on restored store: %v", err)
	}
	_, _, _, _ = s.HashKV(0)
	s.WatchCreate(1, &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: 1})
	for _, r := range []*pb.InternalRaftRequest{
		{Put: &pb.PutRequest{Key: []byte("a"), Value: []byte("b")}},
		{DeleteRange: &pb.DeleteRangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}},
		{Compaction: &pb.CompactionRequest{Revision: s.Rev()}},
	} {
		s.Apply(r)
		if err := s.CheckInvariants(); err != nil {
			t.Fatalf("restored store after %s: %v", kvsm.Describe(r), err)
		}
	}
	s.WatchPoll(1000)
	for _, l := range s.Leases() {
		s.Apply(&pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: l.ID}})
	}
	if err := s.CheckInvariants(); err != nil {
		t.Fatalf("restored store after revokes: %v", err)
	}
}

// kvsmApplyRequests is a workload touching every request kind.
func kvsmApplyRequests() []*pb.InternalRaftRequest {
	put := func(k, v string, lease int64) *pb.InternalRaftRequest {
		return &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(k), Value: []byte(v), Lease: lease, PrevKv: true}}
	}
	return []*pb.InternalRaftRequest{
		{LeaseGrant: &pb.LeaseGrantRequest{TTL: 5}},
		put("a", "1", 1), put("b", "1", 0), put("a", "2", 0), put("c", "x", 1),
		{DeleteRange: &pb.DeleteRangeRequest{Key: []byte("b"), RangeEnd: []byte("c"), PrevKv: true}},
		{Txn: &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 1}}},
			Success: []*pb.RequestOp{
				{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("d"), Value: []byte("t")}}},
				{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte{0}, SortTarget: pb.RangeRequest_MOD, Limit: 2}}},
				{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("a")}}}}}}},
			},
		}},
		{Compaction: &pb.CompactionRequest{Revision: 4}},
		{LeaseRevoke: &pb.LeaseRevokeRequest{ID: 1}},
		{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: 1, Alarm: pb.AlarmType_NOSPACE}},
		put("e", "1", 0),
		{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, MemberID: 1, Alarm: pb.AlarmType_NOSPACE}},
		{Range: &pb.RangeRequest{Key: []byte("a"), Revision: 5}},
	}
}

func encodeKvsmRequests(reqs []*pb.InternalRaftRequest) []byte {
	var out []byte
	for _, r := range reqs {
		b, err := proto.Marshal(r)
		if err != nil {
			panic(err)
		}
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out
}

func kvsmApplySeeds() [][]byte {
	reqs := kvsmApplyRequests()
	return [][]byte{encodeKvsmRequests(reqs), encodeKvsmRequests(reqs[:3]), encodeKvsmRequests(reqs[6:7])}
}

func kvsmSnapshotSeeds() [][]byte {
	s := kvsm.New(kvsm.Config{})
	var seeds [][]byte
	seeds = append(seeds, s.Snapshot())
	for _, r := range kvsmApplyRequests() {
		s.Apply(r)
	}
	snap := s.Snapshot()
	// Raw, and as a body the fuzzer frames itself.
	seeds = append(seeds, snap, snap[len(kvsmSnapshotMagic):len(snap)-4])
	// With the auth section (auth_fuzz_test.go's store).
	authSnap := authStoreForFuzz().Snapshot()
	seeds = append(seeds, authSnap, authSnap[len(kvsmSnapshotMagic):len(authSnap)-4])
	return seeds
}

package kvsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Table tests for the edge semantics of etcd's data model, each pinned to
// what etcd does.

func TestEmptyStoreIsAtRevisionOne(t *testing.T) {
	s := New(Config{})
	if s.Rev() != 1 || s.CompactRev() != 0 {
		t.Fatalf("rev %d compact %d, want 1 and 0", s.Rev(), s.CompactRev())
	}
	resp, err := s.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if err != nil || len(resp.Kvs) != 0 || resp.Header.Revision != 1 {
		t.Fatalf("range on empty store: %v %v", resp, err)
	}
}

func TestVersionAfterDeleteAndRecreate(t *testing.T) {
	s := New(Config{})
	mustApply(t, s, putReq("a", "1")) // rev 2
	mustApply(t, s, putReq("a", "2")) // rev 3
	kv := get(t, s, "a", 0)
	if kv.Version != 2 || kv.CreateRevision != 2 || kv.ModRevision != 3 {
		t.Fatalf("after two puts: %s", Describe(&pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv}}))
	}
	res := mustApply(t, s, delReq("a", "")) // rev 4
	if res.Rev != 4 || len(res.Events) != 1 || res.Events[0].Type != mvccpb.Event_DELETE || res.Events[0].Kv.ModRevision != 4 {
		t.Fatalf("delete: %s", res)
	}
	if get(t, s, "a", 0) != nil {
		t.Fatal("deleted key still visible")
	}
	mustApply(t, s, putReq("a", "3")) // rev 5
	kv = get(t, s, "a", 0)
	if kv.Version != 1 || kv.CreateRevision != 5 || kv.ModRevision != 5 {
		t.Fatalf("re-created key: v=%d c=%d m=%d, want 1 5 5", kv.Version, kv.CreateRevision, kv.ModRevision)
	}
	// History stays readable: the first generation at rev 3.
	if kv := get(t, s, "a", 3); kv == nil || string(kv.Value) != "2" || kv.Version != 2 {
		t.Fatalf("a@3 = %v", kv)
	}
	if kv := get(t, s, "a", 4); kv != nil {
		t.Fatalf("a@4 = %v, want deleted", kv)
	}
}

func TestDeleteNothingDoesNotBump(t *testing.T) {
	s := New(Config{})
	res := mustApply(t, s, delReq("missing", ""))
	if res.Rev != 1 || res.Resp.(*pb.DeleteRangeResponse).Header.Revision != 1 || res.Events != nil {
		t.Fatalf("empty delete: %s", res)
	}
}

func TestCompareOnMissingKey(t *testing.T) {
	tests := []struct {
		name string
		cmp  *pb.Compare
		want bool
	}{
		{"version == 0", cmpVersion("nope", pb.Compare_EQUAL, 0), true},
		{"version > 0", cmpVersion("nope", pb.Compare_GREATER, 0), false},
		{"create == 0", &pb.Compare{Key: []byte("nope"), Target: pb.Compare_CREATE, TargetUnion: &pb.Compare_CreateRevision{}}, true},
		{"mod < 1", &pb.Compare{Key: []byte("nope"), Target: pb.Compare_MOD, Result: pb.Compare_LESS, TargetUnion: &pb.Compare_ModRevision{ModRevision: 1}}, true},
		{"lease == 0", &pb.Compare{Key: []byte("nope"), Target: pb.Compare_LEASE, TargetUnion: &pb.Compare_Lease{}}, true},
		{"value == empty fails", &pb.Compare{Key: []byte("nope"), Target: pb.Compare_VALUE, TargetUnion: &pb.Compare_Value{}}, false},
		{"value != x fails", &pb.Compare{Key: []byte("nope"), Target: pb.Compare_VALUE, Result: pb.Compare_NOT_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte("x")}}, false},
		{"range: every key must match", &pb.Compare{Key: []byte("k"), RangeEnd: []byte("l"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: 1}}, false},
		{"range: all match", &pb.Compare{Key: []byte("k"), RangeEnd: []byte("l"), Target: pb.Compare_VALUE, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Value{Value: []byte("0")}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Config{})
			mustApply(t, s, putReq("k1", "1"))
			mustApply(t, s, putReq("k2", "2"))
			mustApply(t, s, putReq("k2", "3"))
			res := mustApply(t, s, txnReq(&pb.TxnRequest{Compare: []*pb.Compare{tt.cmp}}))
			if got := res.Resp.(*pb.TxnResponse).Succeeded; got != tt.want {
				t.Fatalf("succeeded=%t, want %t", got, tt.want)
			}
			if res.Rev != 4 {
				t.Fatalf("read-only txn bumped the revision to %d", res.Rev)
			}
		})
	}
}

func TestTxnWritesShareOneRevision(t *testing.T) {
	s := New(Config{})
	mustApply(t, s, putReq("c", "0"))
	res := mustApply(t, s, txnReq(&pb.TxnRequest{
		Compare: []*pb.Compare{cmpVersion("c", pb.Compare_EQUAL, 1)},
		Success: []*pb.RequestOp{opPut("a", "1"), opGet("a"), opDel("c", ""), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("b", "2")}})},
	}))
	resp := res.Resp.(*pb.TxnResponse)
	if !resp.Succeeded || res.Rev != 3 || resp.Header.Revision != 3 {
		t.Fatalf("txn: %s", res)
	}
	if got := resp.Responses[1].GetResponseRange(); len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "1" || got.Header.Revision != 3 {
		t.Fatalf("range inside txn does not see the txn's put: %s", res)
	}
	if h := resp.Responses[3].GetResponseTxn().Header.Revision; h != 0 {
		t.Fatalf("nested txn header revision %d; etcd leaves it 0", h)
	}
	var subs []string
	for _, ev := range res.Events {
		if ev.Kv.ModRevision != 3 {
			t.Fatalf("event at %d", ev.Kv.ModRevision)
		}
		subs = append(subs, ev.Type.String()+":"+string(ev.Kv.Key))
	}
	if want := []string{"PUT:a", "DELETE:c", "PUT:b"}; !slices.Equal(subs, want) {
		t.Fatalf("events %v, want %v", subs, want)
	}
}

func TestTxnFailingCheckChangesNothing(t *testing.T) {
	s := New(Config{})
	mustApply(t, s, putReq("a", "1"))
	mustApply(t, s, putReq("a", "2"))
	mustApply(t, s, compactReq(3))
	for _, tc := range []struct {
		name string
		ops  []*pb.RequestOp
		want error
	}{
		{"lease not found", []*pb.RequestOp{opPut("b", "1"), {Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("c"), Lease: 99}}}}, rpctypes.ErrGRPCLeaseNotFound},
		{"compacted range", []*pb.RequestOp{opPut("b", "1"), {Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), Revision: 2}}}}, rpctypes.ErrGRPCCompacted},
		{"future range", []*pb.RequestOp{opPut("b", "1"), {Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), Revision: 4}}}}, rpctypes.ErrGRPCFutureRev},
		{"ignore_value on missing", []*pb.RequestOp{opPut("b", "1"), {Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("zz"), IgnoreValue: true}}}}, rpctypes.ErrGRPCKeyNotFound},
		{"duplicate put", []*pb.RequestOp{opPut("b", "1"), opPut("b", "2")}, rpctypes.ErrGRPCDuplicateKey},
		{"put in deleted range", []*pb.RequestOp{opDel("a", "c"), opPut("b", "2")}, rpctypes.ErrGRPCDuplicateKey},
		{"put in deleted open range", []*pb.RequestOp{opDel("a", "\x00"), opPut("b", "2")}, rpctypes.ErrGRPCDuplicateKey},
		{"put in nested deleted range", []*pb.RequestOp{opPut("b", "2"), opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opDel("b", "")}})}, rpctypes.ErrGRPCDuplicateKey},
		{"nested check", []*pb.RequestOp{opPut("b", "2"), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("c"), Lease: 7}}}}})}, rpctypes.ErrGRPCLeaseNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			applyErr(t, s, txnReq(&pb.TxnRequest{Success: tc.ops}), tc.want)
		})
	}
	// The same key in both branches of one nested txn is fine.
	mustApply(t, s, txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{
		Success: []*pb.RequestOp{opPut("x", "1")}, Failure: []*pb.RequestOp{opPut("x", "2")},
	})}}))
}

func TestCompactionAtTombstone(t *testing.T) {
	s := New(Config{})
	mustApply(t, s, putReq("a", "1")) // 2
	mustApply(t, s, putReq("b", "1")) // 3
	mustApply(t, s, delReq("a", ""))  // 4: tombstone
	mustApply(t, s, putReq("b", "2")) // 5
	mustApply(t, s, compactReq(4))
	// Reads at 4 still see the state as of 4: a deleted, b=1.
	resp, err := s.Range(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), Revision: 4})
	if err != nil || !slices.Equal(keysOf(resp.Kvs), []string{"b"}) || string(resp.Kvs[0].Value) != "1" {
		t.Fatalf("range@4 after compact(4): %s %v", Describe(resp), err)
	}
	if _, err := s.Range(&pb.RangeRequest{Key: []byte("a"), Revision: 3}); err != rpctypes.ErrGRPCCompacted {
		t.Fatalf("range@3: %v, want compacted", err)
	}
	// The tombstone at the compact revision is kept (a watch from 4 sees the
	// delete) but does not count in HashKV.
	if e := s.lookup([]byte("a")); e == nil || len(e.revs) != 1 || !e.revs[0].tombstone() {
		t.Fatalf("tombstone at the compact revision not kept")
	}
	h1, _, _, err := s.HashKV(5)
	if err != nil {
		t.Fatal(err)
	}
	// Compacting past the tombstone drops the key entirely.
	mustApply(t, s, compactReq(5))
	if s.lookup([]byte("a")) != nil {
		t.Fatal("key with only an old tombstone survived compaction")
	}
	if e := s.lookup([]byte("b")); len(e.revs) != 1 || e.revs[0].modMain != 5 {
		t.Fatalf("b keeps %d revisions", len(e.revs))
	}
	h2, _, _, err := s.HashKV(0)
	if err != nil {
		t.Fatal(err)
	}
	// A member that compacted straight to 5 hashes the same; one that never
	// compacted does not (etcd compares hashes only at equal compact
	// revisions).
	fresh := New(Config{})
	for _, r := range []*pb.InternalRaftRequest{putReq("a", "1"), putReq("b", "1"), delReq("a", ""), putReq("b", "2")} {
		mustApply(t, fresh, r)
	}
	h3, _, _, _ := fresh.HashKV(5)
	if h3 == h2 {
		t.Fatalf("HashKV ignores compaction")
	}
	mustApply(t, fresh, compactReq(5))
	h4, _, _, _ := fresh.HashKV(5)
	if h2 != h4 {
		t.Fatalf("HashKV after compactions 4,5 %08x, after 5 %08x", h2, h4)
	}
	// etcd's keep rule makes the hash at 5 the same whether the member
	// compacted at 4 or at 5: both keep only what a compaction at 5 keeps.
	if h1 != h2 {
		t.Fatalf("HashKV at 5: %08x after compact(4), %08x after compact(5)", h1, h2)
	}
	applyErr(t, s, compactReq(5), rpctypes.ErrGRPCCompacted)
	applyErr(t, s, compactReq(6), rpctypes.ErrGRPCFutureRev)
}

func TestRangeLimitAndCount(t *testing.T) {
	s := New(Config{})
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		mustApply(t, s, putReq(k, k))
	}
	mustApply(t, s, delReq("c", ""))
	tests := []struct {
		name      string
		req       *pb.RangeRequest
		keys      []string
		count     int64
		more      bool
		wantEmpty bool
	}{
		{"limit 2", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), Limit: 2}, []string{"a", "b"}, 4, true, false},
		{"limit = total", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), Limit: 4}, []string{"a", "b", "d", "e"}, 4, false, false},
		{"count only", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), CountOnly: true, Limit: 1}, nil, 4, false, true},
		{"filter ignores count", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), MinModRevision: 4, Limit: 1}, []string{"d"}, 4, true, false},
		{"from key", &pb.RangeRequest{Key: []byte("d"), RangeEnd: []byte{0}}, []string{"d", "e"}, 2, false, false},
		{"all", &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}, []string{"a", "b", "d", "e"}, 4, false, false},
		{"at revision 4", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), Revision: 4}, []string{"a", "b", "c"}, 3, false, false},
		{"end before key", &pb.RangeRequest{Key: []byte("d"), RangeEnd: []byte("b")}, nil, 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.Range(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(keysOf(resp.Kvs), tt.keys) && !(tt.wantEmpty && len(resp.Kvs) == 0) {
				t.Fatalf("keys %v, want %v", keysOf(resp.Kvs), tt.keys)
			}
			if resp.Count != tt.count || resp.More != tt.more || resp.Header.Revision != s.Rev() {
				t.Fatalf("count=%d more=%t rev=%d, want %d %t %d", resp.Count, resp.More, resp.Header.Revision, tt.count, tt.more, s.Rev())
			}
		})
	}
	if _, err := s.Range(&pb.RangeRequest{Key: []byte("a"), Revision: 99}); err != rpctypes.ErrGRPCFutureRev {
		t.Fatalf("future range: %v", err)
	}
	if _, err := s.Range(&pb.RangeRequest{}); err != rpctypes.ErrGRPCEmptyKey {
		t.Fatalf("empty key: %v", err)
	}
	if _, err := s.Range(&pb.RangeRequest{Key: []byte("a"), SortTarget: 9}); err != rpctypes.ErrGRPCInvalidSortOption {
		t.Fatalf("bad sort: %v", err)
	}
}

func TestRangeSortEachTarget(t *testing.T) {
	s := New(Config{})
	// Create order b, c, a; then a gets two more versions, c one.
	mustApply(t, s, putReq("b", "3")) // 2
	mustApply(t, s, putReq("c", "1")) // 3
	mustApply(t, s, putReq("a", "2")) // 4
	mustApply(t, s, putReq("a", "2")) // 5
	mustApply(t, s, putReq("a", "2")) // 6
	mustApply(t, s, putReq("c", "1")) // 7
	all := func(target pb.RangeRequest_SortTarget, order pb.RangeRequest_SortOrder, limit int64) []string {
		resp, err := s.Range(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), SortTarget: target, SortOrder: order, Limit: limit})
		if err != nil {
			t.Fatal(err)
		}
		return keysOf(resp.Kvs)
	}
	tests := []struct {
		target pb.RangeRequest_SortTarget
		order  pb.RangeRequest_SortOrder
		limit  int64
		want   []string
	}{
		{pb.RangeRequest_KEY, pb.RangeRequest_NONE, 0, []string{"a", "b", "c"}},
		{pb.RangeRequest_KEY, pb.RangeRequest_ASCEND, 0, []string{"a", "b", "c"}},
		{pb.RangeRequest_KEY, pb.RangeRequest_DESCEND, 0, []string{"c", "b", "a"}},
		{pb.RangeRequest_KEY, pb.RangeRequest_DESCEND, 1, []string{"c"}},
		{pb.RangeRequest_VERSION, pb.RangeRequest_ASCEND, 0, []string{"b", "c", "a"}},
		{pb.RangeRequest_VERSION, pb.RangeRequest_NONE, 0, []string{"b", "c", "a"}}, // NONE with a target is ASCEND
		{pb.RangeRequest_VERSION, pb.RangeRequest_DESCEND, 2, []string{"a", "c"}},
		{pb.RangeRequest_CREATE, pb.RangeRequest_ASCEND, 0, []string{"b", "c", "a"}},
		{pb.RangeRequest_CREATE, pb.RangeRequest_DESCEND, 1, []string{"a"}},
		{pb.RangeRequest_MOD, pb.RangeRequest_ASCEND, 0, []string{"b", "a", "c"}},
		{pb.RangeRequest_MOD, pb.RangeRequest_DESCEND, 0, []string{"c", "a", "b"}},
		{pb.RangeRequest_VALUE, pb.RangeRequest_ASCEND, 0, []string{"c", "a", "b"}},
		{pb.RangeRequest_VALUE, pb.RangeRequest_DESCEND, 1, []string{"b"}},
	}
	for _, tt := range tests {
		if got := all(tt.target, tt.order, tt.limit); !slices.Equal(got, tt.want) {
			t.Errorf("sort %s %s limit %d: %v, want %v", tt.target, tt.order, tt.limit, got, tt.want)
		}
	}
}

func TestPutOptions(t *testing.T) {
	s := New(Config{})
	lease := mustApply(t, s, grantReq(0, 10)).Resp.(*pb.LeaseGrantResponse).ID
	if lease != 1 {
		t.Fatalf("first picked lease ID %d, want 1", lease)
	}
	mustApply(t, s, putLeaseReq("a", "1", lease))
	res := mustApply(t, s, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("a"), Value: []byte("2"), IgnoreLease: true, PrevKv: true}})
	if prev := res.Resp.(*pb.PutResponse).PrevKv; prev == nil || string(prev.Value) != "1" {
		t.Fatalf("prev_kv: %s", res)
	}
	if kv := get(t, s, "a", 0); kv.Lease != lease || string(kv.Value) != "2" {
		t.Fatalf("ignore_lease lost the lease: %v", kv)
	}
	mustApply(t, s, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("a"), IgnoreValue: true}})
	if kv := get(t, s, "a", 0); kv.Lease != 0 || string(kv.Value) != "2" || kv.Version != 3 {
		t.Fatalf("ignore_value put: %v", kv)
	}
	if info, _ := s.Lease(lease); len(info.Keys) != 0 {
		t.Fatalf("lease still holds %v after the key moved off it", info)
	}
	applyErr(t, s, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("nope"), IgnoreValue: true}}, rpctypes.ErrGRPCKeyNotFound)
	applyErr(t, s, putLeaseReq("b", "1", 42), rpctypes.ErrGRPCLeaseNotFound)
	// Both rules broken: a plain put reports the lease (etcd's order), a
	// put inside a txn the key.
	both := &pb.PutRequest{Key: []byte("nope"), IgnoreValue: true, Lease: 42}
	applyErr(t, s, &pb.InternalRaftRequest{Put: both}, rpctypes.ErrGRPCLeaseNotFound)
	applyErr(t, s, txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: both}}}}), rpctypes.ErrGRPCKeyNotFound)
	applyErr(t, s, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("a"), Value: []byte("x"), IgnoreValue: true}}, rpctypes.ErrGRPCValueProvided)
	applyErr(t, s, putReq("", "x"), rpctypes.ErrGRPCEmptyKey)
}

func TestLeases(t *testing.T) {
	s := New(Config{MinLeaseTTLSeconds: 5})
	res := mustApply(t, s, grantReq(7, 1))
	if g := res.Resp.(*pb.LeaseGrantResponse); g.ID != 7 || g.TTL != 5 {
		t.Fatalf("grant: %s", res)
	}
	applyErr(t, s, grantReq(7, 10), rpctypes.ErrGRPCLeaseExist)
	applyErr(t, s, grantReq(8, MaxLeaseTTLSeconds+1), rpctypes.ErrGRPCLeaseTTLTooLarge)
	mustApply(t, s, putLeaseReq("a", "1", 7))
	mustApply(t, s, putLeaseReq("b", "1", 7))
	mustApply(t, s, putLeaseReq("c", "1", 7))
	mustApply(t, s, delReq("c", ""))
	if info, _ := s.Lease(7); !slices.Equal(keysOfBytes(info.Keys), []string{"a", "b"}) {
		t.Fatalf("lease keys %v", info)
	}
	rev := s.Rev()
	res = mustApply(t, s, revokeReq(7))
	if res.Rev != rev+1 || len(res.Events) != 2 || res.Events[0].Kv.ModRevision != rev+1 || res.Events[1].Kv.ModRevision != rev+1 {
		t.Fatalf("revoke: %s", res)
	}
	if _, ok := s.Lease(7); ok || get(t, s, "a", 0) != nil {
		t.Fatal("revoke left the lease or its keys")
	}
	applyErr(t, s, revokeReq(7), rpctypes.ErrGRPCLeaseNotFound)
	// Picked IDs are never picked twice, and skip IDs in use.
	mustApply(t, s, grantReq(2, 10))
	ids := []int64{}
	for range 3 {
		ids = append(ids, mustApply(t, s, grantReq(0, 10)).Resp.(*pb.LeaseGrantResponse).ID)
	}
	mustApply(t, s, revokeReq(ids[2]))
	ids = append(ids, mustApply(t, s, grantReq(0, 10)).Resp.(*pb.LeaseGrantResponse).ID)
	if want := []int64{1, 3, 4, 5}; !slices.Equal(ids, want) {
		t.Fatalf("picked IDs %v, want %v", ids, want)
	}
}

func keysOfBytes(ks [][]byte) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = string(k)
	}
	return out
}

func TestAlarms(t *testing.T) {
	s := New(Config{})
	mustApply(t, s, putReq("a", "1"))
	mustApply(t, s, &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: 3, Alarm: pb.AlarmType_NOSPACE}})
	applyErr(t, s, putReq("b", "1"), rpctypes.ErrGRPCNoSpace)
	applyErr(t, s, grantReq(0, 5), rpctypes.ErrGRPCNoSpace)
	applyErr(t, s, txnReq(&pb.TxnRequest{Failure: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("b", "1")}})}}), rpctypes.ErrGRPCNoSpace)
	mustApply(t, s, delReq("a", ""))
	mustApply(t, s, compactReq(2))
	mustApply(t, s, txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opGet("a")}}))
	if got := s.Alarms(); len(got) != 1 || got[0].MemberID != 3 {
		t.Fatalf("alarms %v", got)
	}
	mustApply(t, s, &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: 1, Alarm: pb.AlarmType_CORRUPT}})
	applyErr(t, s, delReq("a", ""), rpctypes.ErrGRPCCorrupt)
	if _, err := s.Range(&pb.RangeRequest{Key: []byte("a")}); err != rpctypes.ErrGRPCCorrupt {
		t.Fatalf("range on corrupt store: %v", err)
	}
	res := mustApply(t, s, &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_GET}})
	if got := res.Resp.(*pb.AlarmResponse).Alarms; len(got) != 2 || got[0].MemberID != 1 || got[1].MemberID != 3 {
		t.Fatalf("alarm get: %s", res)
	}
	mustApply(t, s, &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, MemberID: 1, Alarm: pb.AlarmType_CORRUPT}})
	mustApply(t, s, &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, MemberID: 3, Alarm: pb.AlarmType_NOSPACE}})
	mustApply(t, s, putReq("b", "1"))
}

func TestValidate(t *testing.T) {
	big := &pb.TxnRequest{}
	for i := range 129 {
		big.Success = append(big.Success, opPut(string(rune('a'+i%26))+string(rune('a'+i/26)), "v"))
	}
	tests := []struct {
		name string
		cfg  Config
		req  *pb.InternalRaftRequest
		want error
	}{
		{"ok put", Config{}, putReq("a", "b"), nil},
		{"empty key", Config{}, putReq("", "b"), rpctypes.ErrGRPCEmptyKey},
		{"empty delete key", Config{}, delReq("", ""), rpctypes.ErrGRPCEmptyKey},
		{"lease provided", Config{}, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("a"), Lease: 1, IgnoreLease: true}}, rpctypes.ErrGRPCLeaseProvided},
		{"too many ops", Config{}, txnReq(big), rpctypes.ErrGRPCTooManyOps},
		{"enough ops with a higher limit", Config{MaxTxnOps: 200}, txnReq(big), nil},
		{"nested too many ops", Config{}, txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opTxn(big)}}), rpctypes.ErrGRPCTooManyOps},
		// A nested txn gets what its parent leaves: 2 ops outside leave 1 inside.
		{"nested within what is left", Config{MaxTxnOps: 3}, txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a", "1"), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("b", "1")}})}}), nil},
		{"nested beyond what is left", Config{MaxTxnOps: 3}, txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a", "1"), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("b", "1"), opPut("c", "1")}})}}), rpctypes.ErrGRPCTooManyOps},
		{"empty op", Config{}, txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{{}}}), rpctypes.ErrGRPCKeyNotFound},
		{"empty compare key", Config{}, txnReq(&pb.TxnRequest{Compare: []*pb.Compare{{}}}), rpctypes.ErrGRPCEmptyKey},
		{"duplicate", Config{}, txnReq(&pb.TxnRequest{Failure: []*pb.RequestOp{opPut("a", "1"), opPut("a", "2")}}), rpctypes.ErrGRPCDuplicateKey},
		{"bad sort", Config{}, txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), SortOrder: 7}}}}}), rpctypes.ErrGRPCInvalidSortOption},
		{"ttl too large", Config{}, grantReq(1, MaxLeaseTTLSeconds+1), rpctypes.ErrGRPCLeaseTTLTooLarge},
		{"negative compaction", Config{}, compactReq(-1), rpctypes.ErrGRPCCompacted},
		{"unsupported", Config{}, &pb.InternalRaftRequest{AuthEnable: &pb.AuthEnableRequest{}}, rpctypes.ErrGRPCNotCapable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Validate(tt.cfg, tt.req); got != tt.want {
				t.Fatalf("Validate: %v, want %v", got, tt.want)
			}
		})
	}
}

func TestViewIsFrozen(t *testing.T) {
	s := New(Config{})
	mustApply(t, s, putReq("a", "1"))
	v := s.View()
	mustApply(t, s, putReq("a", "2"))
	mustApply(t, s, putReq("b", "1"))
	mustApply(t, s, compactReq(3))
	resp, err := v.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "1" || resp.Header.Revision != 2 || v.Rev() != 2 {
		t.Fatalf("view changed: %s %v", Describe(resp), err)
	}
	if _, err := v.ReadTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("x", "y")}}); err != ErrTxnWrites {
		t.Fatalf("ReadTxn with a write: %v", err)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	s := New(Config{})
	mustApply(t, s, grantReq(0, 60))
	mustApply(t, s, putLeaseReq("a", "1", 1))
	mustApply(t, s, putReq("b", "1"))
	mustApply(t, s, delReq("b", ""))
	mustApply(t, s, putReq("a", "2"))
	mustApply(t, s, compactReq(4))
	mustApply(t, s, &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: 2, Alarm: pb.AlarmType_NOSPACE}})
	data := s.Snapshot()
	r, err := Restore(Config{}, data)
	if err != nil {
		t.Fatal(err)
	}
	if r.StateHash() != s.StateHash() || r.Rev() != s.Rev() || r.CompactRev() != 4 || r.SizeBytes() != s.SizeBytes() {
		t.Fatal("restored store differs")
	}
	h1, _, _, _ := s.HashKV(0)
	h2, _, _, _ := r.HashKV(0)
	if h1 != h2 {
		t.Fatal("HashKV differs after restore")
	}
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x40
		if _, err := Restore(Config{}, bad); err == nil {
			t.Fatalf("flipped byte %d restored fine", i)
		}
	}
	if _, err := Restore(Config{}, data[:len(data)-1]); err == nil {
		t.Fatal("truncated snapshot restored")
	}
}

// TestSnapshotWithLargeValues: a snapshot of many keys and a value larger
// than a megabyte is as long as SnapshotSizeBytes counts, appends after a
// prefix unchanged, and restores to the same state.
func TestSnapshotWithLargeValues(t *testing.T) {
	s := New(Config{})
	for i := range 3000 {
		mustApply(t, s, putReq(fmt.Sprintf("k%04d", i), strings.Repeat("v", i%700)))
	}
	mustApply(t, s, putReq("huge", strings.Repeat("h", 1<<20+123)))
	data := s.Snapshot()
	if n := s.SnapshotSizeBytes(); n != len(data) {
		t.Fatalf("SnapshotSizeBytes counts %d bytes, Snapshot is %d", n, len(data))
	}
	prefix := []byte("prefix")
	if got := s.AppendSnapshot(prefix); !bytes.Equal(got, append([]byte("prefix"), data...)) {
		t.Fatal("AppendSnapshot after a prefix differs from the prefix and Snapshot")
	}
	r, err := Restore(Config{}, data)
	if err != nil {
		t.Fatal(err)
	}
	if r.StateHash() != s.StateHash() {
		t.Fatal("restored store differs")
	}
}

// TestViewConcurrentReads reads Views from other goroutines while the
// store applies, compacts and takes new Views; run with -race it proves
// writes never touch memory a View can reach.
func TestViewConcurrentReads(t *testing.T) {
	s := New(Config{})
	for i := range 200 {
		mustApply(t, s, putReq(fmt.Sprintf("k%03d", i%50), fmt.Sprint(i)))
	}
	views := make(chan *View, 8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for v := range views {
			want := v.Rev()
			for range 20 {
				resp, err := v.Range(&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
				if err != nil || resp.Header.Revision != want || len(resp.Kvs) != 50 {
					t.Errorf("view at %d: %d keys at %d, %v", want, len(resp.Kvs), resp.Header.Revision, err)
					return
				}
				_, _, _, _ = v.HashKV(0)
			}
		}
	}()
	for i := range 400 {
		s.Apply(putReq(fmt.Sprintf("k%03d", i%50), fmt.Sprint(i)))
		if i%50 == 0 {
			s.Apply(compactReq(s.Rev() - 10))
			views <- s.View()
		}
	}
	close(views)
	<-done
}

// The revision index's sort gives the comparison sort's order, dense or
// sparse, with txns' several subs per main revision.
func TestSortRevLogEntries(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name   string
		n      int
		spread int64 // main revisions drawn from [base, base+spread)
	}{
		{"small", 100, 1000},
		{"dense", 5000, 5000},
		{"dense with txns", 5000, 1500},
		{"sparse", 5000, 1 << 40},
	} {
		seen := map[[2]int64]bool{}
		var entries []revLogEntry
		for len(entries) < tc.n {
			main := 1000 + rng.Int64N(tc.spread)
			sub := int32(rng.IntN(4))
			if seen[[2]int64{main, int64(sub)}] {
				continue
			}
			seen[[2]int64{main, int64(sub)}] = true
			entries = append(entries, revLogEntry{main: main, sub: sub, key: []byte(fmt.Sprint(len(entries)))})
		}
		want := slices.Clone(entries)
		slices.SortFunc(want, compareRevLogEntries)
		got := sortRevLogEntries(slices.Clone(entries))
		if !slices.EqualFunc(got, want, func(a, b revLogEntry) bool {
			return a.main == b.main && a.sub == b.sub && bytes.Equal(a.key, b.key)
		}) {
			t.Errorf("%s: order differs from the comparison sort", tc.name)
		}
	}
}

// TestFrozenEncodesTheStateWhenFrozen: a Frozen state encodes, on another
// goroutine while the store goes on putting, deleting, compacting,
// granting and revoking, to exactly the bytes Snapshot gave when it was
// frozen. Run with -race it also proves the store's writes never touch
// memory the frozen state reads.
func TestFrozenEncodesTheStateWhenFrozen(t *testing.T) {
	s := New(Config{})
	for i := range 20 {
		mustApply(t, s, grantReq(int64(100+i), 60))
	}
	for i := range 2000 {
		mustApply(t, s, putLeaseReq(fmt.Sprintf("k%04d", i%700), fmt.Sprintf("v%d", i), int64(100+i%20)))
	}
	for round := range 5 {
		want := s.Snapshot()
		frozen := s.Freeze()
		got := make(chan []byte)
		go func() {
			b := make([]byte, 0, frozen.SnapshotSizeBytes())
			got <- frozen.AppendSnapshot(b)
		}()
		for i := range 1000 {
			k := fmt.Sprintf("k%04d", (i*7+round)%900)
			switch i % 10 {
			case 0:
				mustApply(t, s, delReq(k, ""))
			case 1:
				mustApply(t, s, revokeReq(int64(100+(i/10+round)%20)))
				mustApply(t, s, grantReq(int64(100+(i/10+round)%20), 30))
			default:
				mustApply(t, s, putReq(k, fmt.Sprintf("r%d-%d", round, i)))
			}
		}
		mustApply(t, s, compactReq(s.kv.rev-50))
		if b := <-got; !bytes.Equal(b, want) {
			t.Fatalf("round %d: the frozen state encodes to %d bytes, differing from the %d bytes Snapshot gave when it was frozen", round, len(b), len(want))
		}
		if bytes.Equal(s.Snapshot(), want) {
			t.Fatalf("round %d: the store did not change; the test proves nothing", round)
		}
	}
}

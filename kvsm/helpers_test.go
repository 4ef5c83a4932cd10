package kvsm

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Request builders and assertion helpers shared by the package's tests.

func putReq(k, v string) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}
}

func putLeaseReq(k, v string, lease int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(k), Value: []byte(v), Lease: lease}}
}

func delReq(k, end string) *pb.InternalRaftRequest {
	d := &pb.DeleteRangeRequest{Key: []byte(k)}
	if end != "" {
		d.RangeEnd = []byte(end)
	}
	return &pb.InternalRaftRequest{DeleteRange: d}
}

func compactReq(rev int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: rev}}
}

func grantReq(id, ttl int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: id, TTL: ttl}}
}

func revokeReq(id int64) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}}
}

func txnReq(t *pb.TxnRequest) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Txn: t}
}

func opPut(k, v string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}

func opDel(k, end string) *pb.RequestOp {
	d := &pb.DeleteRangeRequest{Key: []byte(k)}
	if end != "" {
		d.RangeEnd = []byte(end)
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}}
}

func opGet(k string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(k)}}}
}

func opTxn(t *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t}}
}

func cmpVersion(k string, result pb.Compare_CompareResult, v int64) *pb.Compare {
	return &pb.Compare{Key: []byte(k), Target: pb.Compare_VERSION, Result: result, TargetUnion: &pb.Compare_Version{Version: v}}
}

// mustApply applies r, fails the test on an error, and checks invariants.
func mustApply(t *testing.T, s *Store, r *pb.InternalRaftRequest) ApplyResult {
	t.Helper()
	res := s.Apply(r)
	if res.Err != nil {
		t.Fatalf("apply %s: %v", Describe(r), res.Err)
	}
	mustInvariants(t, s)
	return res
}

// applyErr applies r, which must fail with want and change nothing.
func applyErr(t *testing.T, s *Store, r *pb.InternalRaftRequest, want error) {
	t.Helper()
	before := s.StateHash()
	res := s.Apply(r)
	if res.Err != want {
		t.Fatalf("apply %s: err %v, want %v", Describe(r), res.Err, want)
	}
	if s.StateHash() != before {
		t.Fatalf("apply %s failed but changed the state", Describe(r))
	}
	mustInvariants(t, s)
}

func mustInvariants(t *testing.T, s *Store) {
	t.Helper()
	if err := s.checkInvariants(); err != nil {
		t.Fatalf("invariants: %v", err)
	}
}

func get(t *testing.T, s *Store, k string, rev int64) *mvccpb.KeyValue {
	t.Helper()
	resp, err := s.Range(&pb.RangeRequest{Key: []byte(k), Revision: rev})
	if err != nil {
		t.Fatalf("get %q@%d: %v", k, rev, err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	return resp.Kvs[0]
}

func keysOf(kvs []*mvccpb.KeyValue) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = string(kv.Key)
	}
	return out
}

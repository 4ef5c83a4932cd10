package linearizability

import (
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// lockLog is a committed log of two holders of lock/L/ protecting res/L;
// unfenced adds the classic failure: holder 1's lease expires (revoked) and
// it writes anyway, then holder 2 writes after its own lease is gone.
func lockLog(unfenced bool) []CommittedEntry {
	put := func(key, value string, lease int64) *pb.InternalRaftRequest {
		return &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(key), Value: []byte(value), Lease: lease}}
	}
	fenced := func(lockKey string, createRev int64, value string) *pb.InternalRaftRequest {
		return &pb.InternalRaftRequest{Txn: &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte(lockKey), Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
				TargetUnion: &pb.Compare_CreateRevision{CreateRevision: createRev}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("res/L"), Value: []byte(value)}}}},
		}}
	}
	reqs := []*pb.InternalRaftRequest{
		{LeaseGrant: &pb.LeaseGrantRequest{ID: 1, TTL: 10}},
		{LeaseGrant: &pb.LeaseGrantRequest{ID: 2, TTL: 10}},
		put("lock/L/1", "", 1),                       // rev 2: holder 1 owns the lock
		put("lock/L/2", "", 2),                       // rev 3: holder 2 waits
		fenced("lock/L/1", 2, "lock/L/1#a"),          // rev 4: holder 1 writes, fenced
		{LeaseRevoke: &pb.LeaseRevokeRequest{ID: 1}}, // rev 5: holder 1's lease expires; holder 2 owns
		fenced("lock/L/1", 2, "lock/L/1#b"),          // holder 1 after a pause, fenced: the guard fails, nothing written
	}
	if unfenced {
		reqs = append(reqs, put("res/L", "lock/L/1#c", 0)) // the same write without the guard
	}
	reqs = append(reqs,
		fenced("lock/L/2", 3, "lock/L/2#d"),
		&pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: 2}},
	)
	if unfenced {
		reqs = append(reqs, put("res/L", "lock/L/2#e", 0)) // holder 2, unguarded, after its lease is gone
	}
	var out []CommittedEntry
	for i, r := range reqs {
		r.Header = &pb.RequestHeader{ID: uint64(100 + i)}
		out = append(out, CommittedEntry{Index: uint64(i + 1), RequestID: uint64(100 + i), Request: r})
	}
	return out
}

func TestLockFencing(t *testing.T) {
	locks := []Lock{{Prefix: "lock/L/", Resource: "res/L"}}
	if got := failuresOf(Check(Input{Committed: lockLog(false), Locks: locks}, Options{}), checkerLockFencing); len(got) != 0 {
		t.Fatalf("fenced holders reported: %v", got)
	}
	got := failuresOf(Check(Input{Committed: lockLog(true), Locks: locks}, Options{}), checkerLockFencing)
	if len(got) != 2 {
		t.Fatalf("unfenced writes: %d failures, want 2: %v", len(got), got)
	}
	if !strings.Contains(got[0], `by holder "lock/L/1" while "lock/L/2"`) || !strings.Contains(got[1], "while nobody held lock") {
		t.Errorf("failures do not name the holders: %v", got)
	}
}

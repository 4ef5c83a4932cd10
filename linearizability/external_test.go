package linearizability

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// stripExternal removes what a real-process recorder cannot know: the
// request IDs in the history and the apply times of the log.
func stripExternal(in *Input) {
	for i := range in.History {
		in.History[i].RequestID = 0
	}
	for i := range in.Committed {
		in.Committed[i].AppliedAt = 0
	}
}

// A correct run, its request IDs and apply times removed, passes once
// ResolveExternal has matched the writes back to the log: matching by
// content never invents a violation (deletes and grants with server-picked
// IDs are not unique by content, so this covers the interchangeable case).
func TestResolveExternalKeepsCorrectRunsCorrect(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		g := generate(genConfig{seed: seed, clients: 4, ops: 300, keys: 6, unknownPerMille: 80, watches: 4, leases: true, compactions: true})
		in := g.in
		stripExternal(&in)
		in.Leases = nil // real processes report no tick-level lease events
		// The generator does not time watch responses on the history's
		// clock; put them after everything so they bound nothing.
		for _, w := range in.Watches {
			for j := range w.Responses {
				w.Responses[j].Time = 1 << 60
			}
		}
		stats := ResolveExternal(&in)
		if res := Check(in, Options{}); !res.OK {
			t.Fatalf("seed %d: correct run fails after external resolution (%s):\n%s", seed, stats, res)
		}
		if stats.MatchedLearned == 0 || stats.UnmatchedLearned != 0 {
			t.Fatalf("seed %d: %s", seed, stats)
		}
	}
}

// An acknowledged write whose entry is not in the log is reported lost,
// exactly as with request IDs.
func TestResolveExternalReportsLostWrites(t *testing.T) {
	sc := newScript()
	sc.op(0, 0, 10, put("a", "1"))
	sc.op(0, 20, 30, put("a", "2"))
	sc.op(1, 40, 50, get("a"))
	in := sc.in
	in.Committed = in.Committed[:1] // the second put never reached the log
	stripExternal(&in)
	stats := ResolveExternal(&in)
	if stats.UnmatchedLearned != 1 {
		t.Fatalf("stats: %s", stats)
	}
	res := Check(in, Options{})
	if len(failuresOf(res, checkerDurability)) == 0 {
		t.Fatalf("lost write not reported:\n%s", res)
	}
}

// The application retried a non-idempotent txn after its first attempt
// timed out. Both attempts are the same request; the first applied after
// all, so the second finds its compare false. The first is an unknown
// outcome resolved by the log, not a violation; had the log held only one
// of them, the history would be judged by that instead.
func TestRetriedTxnAfterTimeout(t *testing.T) {
	incr := Request{Txn: &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte("n"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: 1}}},
		Success: []*pb.RequestOp{opPut("n", "2")},
		Failure: []*pb.RequestOp{opGet("n")},
	}}
	build := func(firstApplied bool) Input {
		sc := newScript()
		sc.op(0, 0, 10, put("n", "1"))
		first := sc.unknown(0, 20, incr, firstApplied)
		sc.in.History[first].Return = 120
		sc.in.History[first].Response = Response{Err: rpctypes.ErrGRPCTimeout}
		sc.op(0, 130, 150, incr)
		sc.op(1, 160, 170, get("n"))
		return sc.in
	}
	for _, firstApplied := range []bool{true, false} {
		in := build(firstApplied)
		stripExternal(&in)
		stats := ResolveExternal(&in)
		res := Check(in, Options{})
		if !res.OK {
			t.Fatalf("first attempt applied=%v: a retried txn is judged a violation (%s):\n%s", firstApplied, stats, res)
		}
		wantUnknownApplied := 0
		if firstApplied {
			wantUnknownApplied = 1
		}
		if res.Stats.UnknownApplied != wantUnknownApplied {
			t.Fatalf("first attempt applied=%v: %d unknown outcomes resolved as applied, want %d (%s)", firstApplied, res.Stats.UnknownApplied, wantUnknownApplied, res.Stats)
		}
	}
	// The same history where the client claims the retry succeeded although
	// the log shows its compare failed is caught.
	in := build(true)
	in.History[2].Response = Response{Txn: &pb.TxnResponse{Header: &pb.ResponseHeader{Revision: 4}, Succeeded: true,
		Responses: []*pb.ResponseOp{{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{Header: &pb.ResponseHeader{}}}}}}}
	stripExternal(&in)
	ResolveExternal(&in)
	if res := Check(in, Options{}); res.OK {
		t.Fatalf("a retry claiming success where the log says its compare failed passes:\n%s", res)
	}
}

// AppliedAt becomes the first arrival of a response showing the entry
// applied: a revoke that deletes a key is shown by its own revision; one
// that deletes nothing by the next revision-changing entry.
func TestResolveExternalBoundsAppliedAt(t *testing.T) {
	sc := newScript()
	sc.op(0, 0, 1e6, grant(7, 10))            // rev 1
	sc.op(0, 2e6, 3e6, putLease("k", "v", 7)) // rev 2
	sc.op(1, 4e6, 5e6, grant(8, 10))          // rev 2
	sc.cluster(revoke(7))                     // rev 3: deletes k
	sc.cluster(revoke(8))                     // rev 3: deletes nothing
	sc.op(1, 20e9, 21e9, put("x", "1"))       // rev 4
	in := sc.in
	watch := &pb.WatchCreateRequest{Key: []byte("k"), StartRevision: 2}
	in.Watches = []WatchHistory{{Client: 2, Member: 1, Create: watch, Responses: []WatchReceived{
		{Time: 3e6, Resp: &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 2}, Created: true}},
		{Time: 3e6 + 1, Resp: &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 2}, Events: []*mvccpb.Event{{Type: mvccpb.PUT,
			Kv: &mvccpb.KeyValue{Key: []byte("k"), Value: []byte("v"), CreateRevision: 2, ModRevision: 2, Version: 1, Lease: 7}}}}},
		{Time: 9e9, Resp: &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 3}, Events: []*mvccpb.Event{{Type: mvccpb.DELETE,
			Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: 3}}}}},
	}}}
	in.Clocks = Clocks{ShortestSecondNs: 1e9}
	stripExternal(&in)
	ResolveExternal(&in)
	if got := in.Committed[3].AppliedAt; got != 9e9 {
		t.Fatalf("revoke of 7 bounded at %d, want the delete event's arrival 9e9", got)
	}
	if got := in.Committed[4].AppliedAt; got != 21e9 {
		t.Fatalf("revoke of 8 bounded at %d, want the next revision's first sight 21e9", got)
	}
	// The delete event arrived 9 s into a 10 s lease granted at 0: the
	// revoke applied early, and the bound proves it.
	res := Check(in, Options{})
	if len(failuresOf(res, checkerLeaseTime)) != 1 {
		t.Fatalf("early expiry shown by a watch event not caught:\n%s", res)
	}
	// Seen only after the TTL: nothing can be said, nothing is reported.
	in.Watches[0].Responses[2].Time = 11e9
	for i := range in.Committed {
		in.Committed[i].AppliedAt = 0
	}
	ResolveExternal(&in)
	if res := Check(in, Options{}); !res.OK {
		t.Fatalf("an expiry first seen after the TTL is reported:\n%s", res)
	}
}

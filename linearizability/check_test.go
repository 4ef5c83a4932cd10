package linearizability

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

func TestGeneratedRunPasses(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		g := generate(genConfig{seed: seed, clients: 4, ops: 300, keys: 6, unknownPerMille: 50, watches: 4, leases: true, compactions: true})
		res := Check(g.in, Options{})
		if !res.OK {
			t.Fatalf("seed %d: correct run fails:\n%s", seed, res)
		}
		if seed == 1 {
			t.Log(res.String())
		}
	}
}

func failuresOf(res Result, checker string) []string {
	var out []string
	for _, f := range res.Failures {
		if f.Checker == checker {
			out = append(out, f.Detail)
		}
	}
	return out
}

// A timeout is not a failure of the write: it may still commit. The log
// decides, as for an outcome never learned.
func TestIndeterminateErrorIsResolvedByTheLog(t *testing.T) {
	build := func(committed bool) Input {
		sc := newScript()
		i := sc.unknown(0, 0, put("a", "x"), committed)
		sc.in.History[i].Return = 5
		sc.in.History[i].Response = Response{Err: rpctypes.ErrGRPCTimeout}
		sc.op(1, 100, 110, get("a"))
		if !committed {
			// The read saw the write anyway.
			sc.in.History[1].Response = Response{Range: &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: 2}, Count: 1,
				Kvs: []*mvccpb.KeyValue{{Key: []byte("a"), Value: []byte("x"), CreateRevision: 2, ModRevision: 2, Version: 1}}}}
		}
		return sc.in
	}
	if res := Check(build(true), Options{}); !res.OK {
		t.Fatalf("a timed-out write that committed, then read, fails:\n%s", res)
	}
	res := Check(build(false), Options{})
	if len(failuresOf(res, checkerKV)) == 0 {
		t.Fatalf("a timed-out write absent from the log was read, and linearizability passes:\n%s", res)
	}
}

func TestHistoryPreconditions(t *testing.T) {
	sc := newScript()
	sc.op(0, 0, 10, put("a", "1"))
	sc.op(0, 5, 20, put("b", "1")) // client 0 again, before its first op returned
	sc.in.History = append(sc.in.History,
		Operation{Client: 1, Call: 30, Return: 40, Request: Request{Put: &pb.PutRequest{Key: []byte("c")}, Range: &pb.RangeRequest{Key: []byte("c")}}},
		Operation{Client: 2, Call: 30, Return: 40, Request: get("c")},                                                   // succeeded with no response
		Operation{Client: 3, Call: 50, Return: 45, Request: get("c"), Response: Response{Err: rpctypes.ErrGRPCTimeout}}, // returns before its call
		Operation{Client: 4, Call: 60, Return: Unknown, Request: put("d", "1"), RequestID: sc.in.History[0].RequestID},
	)
	res := Check(sc.in, Options{})
	got := failuresOf(res, checkerHistory)
	want := []string{
		`client 0 op #1 [5, 20] put("b", "1"): called before the same client's op #0 returned at 10`,
		"client 1 op #2: request has 2 fields set, want exactly 1",
		`client 2 op #3 [30, 40] range("c"): range succeeded but its response is missing`,
		`client 3 op #4 [50, 45] range("c"): returns before it is called`,
		`client 4 op #5 [60, unknown] put("d", "1"): request ID 1 already used by op #0`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("history failures\n got %q\nwant %q", got, want)
	}
}

func TestFailuresAreCappedPerChecker(t *testing.T) {
	sc := newScript()
	for i := 0; i < 5; i++ {
		sc.op(i, int64(i*10), int64(i*10+5), put(fmt.Sprint("k", i), "v"))
	}
	sc.in.Committed = nil // every acknowledged write is lost
	res := Check(sc.in, Options{MaxFailuresPerChecker: 2})
	if got := len(failuresOf(res, checkerDurability)); got != 2 {
		t.Fatalf("kept %d durability failures, want 2:\n%s", got, res)
	}
	if res.Stats.FailuresOmitted != 3 || !strings.Contains(res.String(), "FAILED (5 failures, 3 not shown)") {
		t.Fatalf("omitted count wrong:\n%s", res)
	}
}

func TestVisualizeKV(t *testing.T) {
	sc := newScript()
	sc.op(0, 0, 10, put("a", "1"))
	sc.unknown(1, 5, put("b", "2"), true)
	sc.op(2, 20, 30, get("a"))
	var out bytes.Buffer
	if err := VisualizeKV(sc.in, &out); err != nil {
		t.Fatal(err)
	}
	html := out.String()
	for _, want := range []string{"<html", `put(\"a\", \"1\") -\u003e ok @rev 2`, "the log says: applied at rev 2, to rev 3"} {
		if !strings.Contains(html, want) {
			t.Errorf("visualization lacks %q", want)
		}
	}
}

// Responses split by the fragment flag are one message: a revision may span
// them. The same split without the flag breaks atomicity.
func TestWatchFragmentsAreReassembled(t *testing.T) {
	build := func(fragment bool) Input {
		sc := newScript()
		sc.op(0, 0, 10, txn(nil, []*pb.RequestOp{opPut("a", "1"), opPut("b", "1")}, nil))
		w := sc.watch(1, watchAB(), 1, 2)
		r := w.Responses[1].Resp
		first := &pb.WatchResponse{Header: r.Header, Events: r.Events[:1], Fragment: fragment}
		r.Events = r.Events[1:]
		w.Responses = append(w.Responses[:1], append([]WatchReceived{{Time: 1005, Resp: first}}, w.Responses[1:]...)...)
		sc.in.Watches = append(sc.in.Watches, w)
		return sc.in
	}
	if res := Check(build(true), Options{}); !res.OK {
		t.Fatalf("fragmented revision fails:\n%s", res)
	}
	if res := Check(build(false), Options{}); len(failuresOf(res, checkerWatchAtomic)) == 0 {
		t.Fatalf("split revision passes:\n%s", res)
	}
}

// prev_kv may be missing once the revision before the event was compacted,
// and only then.
func TestWatchPrevKVMissing(t *testing.T) {
	build := func(compact bool) Input {
		sc := newScript()
		sc.op(0, 0, 10, put("a", "1"))
		sc.op(0, 20, 30, put("a", "2"))
		if compact {
			sc.op(0, 40, 50, Request{Compact: &pb.CompactionRequest{Revision: 3}})
		}
		create := watchAB()
		create.PrevKv = true
		w := sc.watch(1, create, 1, 3)
		w.Responses[2].Resp.Events[0].PrevKv = nil
		sc.in.Watches = append(sc.in.Watches, w)
		return sc.in
	}
	if res := Check(build(true), Options{}); !res.OK {
		t.Fatalf("prev_kv missing after compaction fails:\n%s", res)
	}
	if res := Check(build(false), Options{}); len(failuresOf(res, checkerWatchPrevKV)) == 0 {
		t.Fatalf("prev_kv missing without compaction passes:\n%s", res)
	}
}

func TestLeaseExpiryNeedsLeadershipAndAGrant(t *testing.T) {
	res := Check(Input{Leases: []LeaseEvent{
		{Member: 1, LocalTick: 5, Lease: 7, Kind: LeaseGranted, TTLTicks: 10},
		{Member: 1, LocalTick: 50, Lease: 7, Kind: LeaseExpiryProposed},
		{Member: 2, LocalTick: 0, Kind: LeaseBecameLeader},
		{Member: 2, LocalTick: 500, Lease: 8, Kind: LeaseExpiryProposed},
	}}, Options{})
	got := failuresOf(res, checkerLeaseExpiry)
	want := []string{
		"member 1 tick 50 ExpiryProposed lease 7 ttl 0 ticks: member 1 proposed an expiry without having become leader",
		"member 2 tick 500 ExpiryProposed lease 8 ttl 0 ticks: expiry of a lease no member reported granting",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lease failures\n got %q\nwant %q", got, want)
	}
}

// The report of a broken run reads the same on every run.
func TestFailureTextIsDeterministic(t *testing.T) {
	g := generate(genConfig{seed: 11, clients: 6, ops: 400, keys: 4, unknownPerMille: 50, watches: 3, leases: true, compactions: true})
	for i := range g.in.History {
		if r := g.in.History[i].Response.Range; r != nil && len(r.Kvs) > 0 && i%3 == 0 {
			r.Kvs[0].Value = []byte("bad")
		}
	}
	g.in.Committed = g.in.Committed[:len(g.in.Committed)-3]
	for _, w := range g.in.Watches {
		if len(w.Responses) > 2 {
			w.Responses[1].Resp.Events = nil
		}
	}
	first := Check(g.in, Options{}).String()
	if !strings.Contains(first, "FAILED") {
		t.Fatalf("broken run passes:\n%s", first)
	}
	for i := 0; i < 3; i++ {
		if again := Check(g.in, Options{}).String(); again != first {
			t.Fatalf("report differs between runs:\n%s\n---\n%s", first, again)
		}
	}
}

// The log must hold what the client sent, whatever the client learned.
func TestCommittedRequestMustBeTheClients(t *testing.T) {
	sc := newScript()
	sc.unknown(0, 0, put("a", "1"), true)
	sc.in.Committed[0].Request = internalRequest(put("a", "2"))
	res := Check(sc.in, Options{})
	want := `client 0 op #0 [0, unknown] put("a", "1"): the committed entry at raft index 1 logs a different request: the client sent put("a", "1"), the log holds put("a", "2")`
	if got := failuresOf(res, checkerDurability); len(got) != 1 || got[0] != want {
		t.Fatalf("durability failures\n got %q\nwant %q", got, want)
	}
}

// What the lease-expiry-time checker does not hold against a run: a
// client's own revoke, an expiry the fastest clock explains, a TTL that
// spans a forward clock jump, and any run whose clock rate is unknown.
func TestLeaseTimesAllowances(t *testing.T) {
	const fastSecondNs = 1_000_000_000 * 1000 / 1200 // a clock 20% fast
	keepAliveAt3s := []KeepAlive{{Client: 0, Lease: 7, Sent: 3e9, Return: 3e9 + 1e6, TTLSeconds: 10}}
	cases := []struct {
		name      string
		revokedBy func() *script
		appliedAt int64
		clocks    Clocks
		caught    bool
	}{
		{name: "on time", appliedAt: 13e9, clocks: Clocks{ShortestSecondNs: 1e9}},
		{name: "early", appliedAt: 12e9, clocks: Clocks{ShortestSecondNs: 1e9}, caught: true},
		{name: "early by what a clock 20% fast explains", appliedAt: 3e9 + 10*fastSecondNs, clocks: Clocks{ShortestSecondNs: fastSecondNs}},
		{name: "earlier than a clock 20% fast explains", appliedAt: 3e9 + 10*fastSecondNs - 1, clocks: Clocks{ShortestSecondNs: fastSecondNs}, caught: true},
		{name: "early across a forward jump", appliedAt: 12e9, clocks: Clocks{ShortestSecondNs: 1e9, Faults: []TimeSpan{{1e9, 1e9}, {5e9, 5e9}}}},
		{name: "early after a stall that outlasted the keepalive", appliedAt: 12e9, clocks: Clocks{ShortestSecondNs: 1e9, Faults: []TimeSpan{{1e9, 3e9 + 1}}}},
		{name: "early with clock faults outside the TTL", appliedAt: 12e9, clocks: Clocks{ShortestSecondNs: 1e9, Faults: []TimeSpan{{1e9, 3e9 - 1}, {12e9 + 1, 13e9}}}, caught: true},
		{name: "clock rate unknown", appliedAt: 12e9},
		{name: "revoked by the client", appliedAt: 12e9, clocks: Clocks{ShortestSecondNs: 1e9}, revokedBy: func() *script {
			sc := newScript()
			sc.op(0, 0, 1e6, grant(7, 10))
			sc.op(0, 12e9-1e6, 12e9+1e6, revoke(7))
			return sc
		}},
		// The client library sent the revoke twice (the first answer lost
		// with a killed member): the first copy commits unclaimed, the
		// retry's LeaseNotFound is what the client learned.
		{name: "revoked by the client, first copy unclaimed", appliedAt: 12e9, clocks: Clocks{ShortestSecondNs: 1e9}, revokedBy: func() *script {
			sc := newScript()
			sc.op(0, 0, 1e6, grant(7, 10))
			sc.cluster(revoke(7))
			sc.op(0, 12e9-1e6, 12e9+1e6, revoke(7))
			return sc
		}},
		{name: "a client revoke sent after the unclaimed one applied", appliedAt: 12e9, clocks: Clocks{ShortestSecondNs: 1e9}, caught: true, revokedBy: func() *script {
			sc := newScript()
			sc.op(0, 0, 1e6, grant(7, 10))
			sc.cluster(revoke(7))
			sc.op(0, 12e9+1, 12e9+1e6, revoke(7))
			return sc
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sc := leaseTimeScript()
			if c.revokedBy != nil {
				sc = c.revokedBy()
			}
			sc.in.KeepAlives = keepAliveAt3s
			sc.in.Committed[1].AppliedAt = c.appliedAt
			sc.in.Clocks = c.clocks
			res := Check(sc.in, Options{})
			if got := len(failuresOf(res, checkerLeaseTime)) > 0; got != c.caught {
				t.Fatalf("caught=%v, want %v:\n%s", got, c.caught, res)
			}
			if !c.caught && !res.OK {
				t.Fatalf("allowed case fails:\n%s", res)
			}
		})
	}
}

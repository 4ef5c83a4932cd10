package linearizability

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// baseScript is the store the semantics table starts from:
//
//	a="3"@4 (created at 2, version 2)
//	b="2"@3
//	c="4"@5 with lease 5
//	d="5"@6
//
// at revision 6, lease 5 alive, never compacted.
func baseScript() *script {
	sc := newScript()
	sc.op(0, 0, 1, put("a", "1"))
	sc.op(0, 2, 3, put("b", "2"))
	sc.op(0, 4, 5, put("a", "3"))
	sc.op(0, 6, 7, grant(5, 10))
	sc.op(0, 8, 9, putLease("c", "4", 5))
	sc.op(0, 10, 11, put("d", "5"))
	return sc
}

func rangeReq(key, end string, edit func(*pb.RangeRequest)) Request {
	r := &pb.RangeRequest{Key: []byte(key)}
	if end != "" {
		r.RangeEnd = []byte(end)
	}
	if edit != nil {
		edit(r)
	}
	return Request{Range: r}
}

func txn(cmp []*pb.Compare, then, els []*pb.RequestOp) Request {
	return Request{Txn: &pb.TxnRequest{Compare: cmp, Success: then, Failure: els}}
}

func opPut(key, value string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(value)}}}
}

func opGet(key string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(key)}}}
}

func opTxn(t Request) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t.Txn}}
}

func cmpValue(key string, result pb.Compare_CompareResult, v string) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Target: pb.Compare_VALUE, Result: result, TargetUnion: &pb.Compare_Value{Value: []byte(v)}}
}

func TestApplySemantics(t *testing.T) {
	cases := []struct {
		name  string
		req   Request
		past  bool   // answer reads at a past revision from the script's history
		want  string // the response
		state string // the state after, when it changes
	}{
		{name: "get one key", req: get("a"), want: `["a"="3"@4(create 2, v2)] count 1 @rev 6`},
		{name: "get a missing key", req: get("z"), want: `[] count 0 @rev 6`},
		{name: "interval", req: rangeReq("a", "c", nil), want: `["a"="3"@4(create 2, v2), "b"="2"@3(create 3, v1)] count 2 @rev 6`},
		{name: "from key", req: rangeReq("c", "\x00", nil), want: `["c"="4"@5(create 5, v1, lease 5), "d"="5"@6(create 6, v1)] count 2 @rev 6`},
		{name: "empty interval", req: rangeReq("c", "b", nil), want: `[] count 0 @rev 6`},
		{name: "limit cuts and says more", req: rangeReq("a", "z", func(r *pb.RangeRequest) { r.Limit = 2 }),
			want: `["a"="3"@4(create 2, v2), "b"="2"@3(create 3, v1)] count 4 more @rev 6`},
		{name: "limit at the size says no more", req: rangeReq("a", "z", func(r *pb.RangeRequest) { r.Limit = 4 }),
			want: `["a"="3"@4(create 2, v2), "b"="2"@3(create 3, v1), "c"="4"@5(create 5, v1, lease 5), "d"="5"@6(create 6, v1)] count 4 @rev 6`},
		{name: "keys only", req: rangeReq("a", "c", func(r *pb.RangeRequest) { r.KeysOnly = true }),
			want: `["a"=""@4(create 2, v2), "b"=""@3(create 3, v1)] count 2 @rev 6`},
		{name: "count only ignores limit", req: rangeReq("a", "z", func(r *pb.RangeRequest) { r.CountOnly, r.Limit = true, 1 }),
			want: `[] count 4 @rev 6`},
		{name: "sort by mod descending with limit", req: rangeReq("a", "z", func(r *pb.RangeRequest) {
			r.SortTarget, r.SortOrder, r.Limit = pb.RangeRequest_MOD, pb.RangeRequest_DESCEND, 2
		}), want: `["d"="5"@6(create 6, v1), "c"="4"@5(create 5, v1, lease 5)] count 4 more @rev 6`},
		{name: "sort target without order ascends", req: rangeReq("a", "z", func(r *pb.RangeRequest) { r.SortTarget = pb.RangeRequest_VERSION }),
			want: `["b"="2"@3(create 3, v1), "c"="4"@5(create 5, v1, lease 5), "d"="5"@6(create 6, v1), "a"="3"@4(create 2, v2)] count 4 @rev 6`},
		{name: "key descending", req: rangeReq("a", "c", func(r *pb.RangeRequest) { r.SortOrder = pb.RangeRequest_DESCEND }),
			want: `["b"="2"@3(create 3, v1), "a"="3"@4(create 2, v2)] count 2 @rev 6`},
		{name: "mod filter keeps count", req: rangeReq("a", "z", func(r *pb.RangeRequest) { r.MinModRevision = 5 }),
			want: `["c"="4"@5(create 5, v1, lease 5), "d"="5"@6(create 6, v1)] count 4 @rev 6`},
		{name: "create filter", req: rangeReq("a", "z", func(r *pb.RangeRequest) { r.MaxCreateRevision = 3 }),
			want: `["a"="3"@4(create 2, v2), "b"="2"@3(create 3, v1)] count 4 @rev 6`},
		{name: "filters and limit: more counts the filtered", req: rangeReq("a", "z", func(r *pb.RangeRequest) { r.MinCreateRevision, r.Limit = 3, 1 }),
			want: `["b"="2"@3(create 3, v1)] count 4 more @rev 6`},
		{name: "past revision without history is left to the replay", req: rangeReq("a", "z", func(r *pb.RangeRequest) { r.Revision = 3 }),
			want: `[past revision: checked against the replay] @rev 6`},
		{name: "past revision from history", past: true, req: rangeReq("a", "z", func(r *pb.RangeRequest) { r.Revision = 3 }),
			want: `["a"="1"@2(create 2, v1), "b"="2"@3(create 3, v1)] count 2 @rev 6`},
		{name: "current revision is answered exactly", req: rangeReq("b", "", func(r *pb.RangeRequest) { r.Revision = 6 }),
			want: `["b"="2"@3(create 3, v1)] count 1 @rev 6`},
		{name: "future revision", req: rangeReq("a", "", func(r *pb.RangeRequest) { r.Revision = 7 }), want: "error FutureRev"},

		{name: "put creates", req: put("e", "6"), want: "ok @rev 7",
			state: `rev 7, {"a"="3"@4(create 2, v2), "b"="2"@3(create 3, v1), "c"="4"@5(create 5, v1, lease 5), "d"="5"@6(create 6, v1), "e"="6"@7(create 7, v1)}, leases [5]`},
		{name: "put with prev_kv", req: Request{Put: &pb.PutRequest{Key: []byte("a"), Value: []byte("x"), PrevKv: true}},
			want:  `ok prev "a"="3"@4(create 2, v2) @rev 7`,
			state: `rev 7, {"a"="x"@7(create 2, v3), "b"="2"@3(create 3, v1), "c"="4"@5(create 5, v1, lease 5), "d"="5"@6(create 6, v1)}, leases [5]`},
		{name: "put keeps value with ignore_value", req: Request{Put: &pb.PutRequest{Key: []byte("c"), IgnoreValue: true}},
			want:  "ok @rev 7",
			state: `rev 7, {"a"="3"@4(create 2, v2), "b"="2"@3(create 3, v1), "c"="4"@7(create 5, v2), "d"="5"@6(create 6, v1)}, leases [5]`},
		{name: "put keeps lease with ignore_lease", req: Request{Put: &pb.PutRequest{Key: []byte("c"), Value: []byte("y"), IgnoreLease: true}},
			want:  "ok @rev 7",
			state: `rev 7, {"a"="3"@4(create 2, v2), "b"="2"@3(create 3, v1), "c"="y"@7(create 5, v2, lease 5), "d"="5"@6(create 6, v1)}, leases [5]`},
		{name: "ignore_value on a missing key", req: Request{Put: &pb.PutRequest{Key: []byte("z"), IgnoreValue: true}}, want: "error KeyNotFound"},
		{name: "put checks the lease before the key", req: Request{Put: &pb.PutRequest{Key: []byte("z"), IgnoreValue: true, Lease: 99}}, want: "error LeaseNotFound"},
		{name: "put on a missing lease", req: putLease("a", "x", 99), want: "error LeaseNotFound"},

		{name: "delete a range with prev_kv", req: Request{DeleteRange: &pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte("c"), PrevKv: true}},
			want:  `deleted 2 prev ["a"="3"@4(create 2, v2), "b"="2"@3(create 3, v1)] @rev 7`,
			state: `rev 7, {"c"="4"@5(create 5, v1, lease 5), "d"="5"@6(create 6, v1)}, leases [5]`},
		{name: "delete nothing keeps the revision", req: del("z"), want: "deleted 0 @rev 6"},

		{name: "compare value", req: txn([]*pb.Compare{cmpValue("a", pb.Compare_EQUAL, "3")}, []*pb.RequestOp{opGet("b")}, nil),
			want: `then [["b"="2"@3(create 3, v1)] count 1] @rev 6`},
		{name: "value compare on a missing key fails even for !=", req: txn([]*pb.Compare{cmpValue("z", pb.Compare_NOT_EQUAL, "x")}, nil, []*pb.RequestOp{opGet("z")}),
			want: `else [[] count 0] @rev 6`},
		{name: "version compare on a missing key compares 0", req: txn([]*pb.Compare{{Key: []byte("z"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL}}, []*pb.RequestOp{opGet("z")}, nil),
			want: `then [[] count 0] @rev 6`},
		{name: "range compare holds for every key", req: txn([]*pb.Compare{{Key: []byte("a"), RangeEnd: []byte("c"), Target: pb.Compare_MOD, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_ModRevision{ModRevision: 2}}}, nil, nil),
			want: `then [] @rev 6`},
		{name: "range compare fails for one key", req: txn([]*pb.Compare{{Key: []byte("a"), RangeEnd: []byte("c"), Target: pb.Compare_MOD, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_ModRevision{ModRevision: 3}}}, nil, nil),
			want: `else [] @rev 6`},
		{name: "lease and create compares", req: txn([]*pb.Compare{
			{Key: []byte("c"), Target: pb.Compare_LEASE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Lease{Lease: 5}},
			{Key: []byte("d"), Target: pb.Compare_CREATE, Result: pb.Compare_LESS, TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 7}},
		}, nil, nil), want: `then [] @rev 6`},
		{name: "txn reads its own writes at one revision", req: txn(nil, []*pb.RequestOp{opPut("a", "x"), opPut("e", "y"), opGet("a")}, nil),
			want:  `then [ok, ok, ["a"="x"@7(create 2, v3)] count 1] @rev 7`,
			state: `rev 7, {"a"="x"@7(create 2, v3), "b"="2"@3(create 3, v1), "c"="4"@5(create 5, v1, lease 5), "d"="5"@6(create 6, v1), "e"="y"@7(create 7, v1)}, leases [5]`},
		{name: "nested compares see the state before the txn", req: txn(nil, []*pb.RequestOp{
			opPut("a", "x"),
			opTxn(txn([]*pb.Compare{cmpValue("a", pb.Compare_EQUAL, "3")}, []*pb.RequestOp{opPut("b", "y")}, []*pb.RequestOp{opPut("d", "z")})),
		}, nil), want: `then [ok, then [ok]] @rev 7`,
			state: `rev 7, {"a"="x"@7(create 2, v3), "b"="y"@7(create 3, v2), "c"="4"@5(create 5, v1, lease 5), "d"="5"@6(create 6, v1)}, leases [5]`},
		{name: "a writing txn with a failing put has no effect", req: txn(nil, []*pb.RequestOp{opPut("a", "x"),
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("z"), IgnoreValue: true}}}}, nil),
			want: "error KeyNotFound"},
		{name: "a writing txn ranging at a future revision has no effect", req: txn(nil, []*pb.RequestOp{opPut("a", "x"),
			{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), Revision: 7}}}}, nil),
			want: "error FutureRev"},
		{name: "a read-only txn keeps the revision", req: txn(nil, []*pb.RequestOp{opGet("d")}, nil),
			want: `then [["d"="5"@6(create 6, v1)] count 1] @rev 6`},

		{name: "compact", req: Request{Compact: &pb.CompactionRequest{Revision: 6}}, want: "ok @rev 6",
			state: `rev 6, compacted at 6, {"a"="3"@4(create 2, v2), "b"="2"@3(create 3, v1), "c"="4"@5(create 5, v1, lease 5), "d"="5"@6(create 6, v1)}, leases [5]`},
		{name: "compact the future", req: Request{Compact: &pb.CompactionRequest{Revision: 7}}, want: "error FutureRev"},

		{name: "grant raises the TTL to the minimum", req: grant(9, 0), want: "lease 9 ttl 1s @rev 6",
			state: `rev 6, {"a"="3"@4(create 2, v2), "b"="2"@3(create 3, v1), "c"="4"@5(create 5, v1, lease 5), "d"="5"@6(create 6, v1)}, leases [5 9]`},
		{name: "grant an existing lease", req: grant(5, 10), want: "error LeaseExist"},
		{name: "grant with ID 0 lets the store pick", req: grant(0, 5), want: "lease 1 ttl 5s @rev 6",
			state: `rev 6, {"a"="3"@4(create 2, v2), "b"="2"@3(create 3, v1), "c"="4"@5(create 5, v1, lease 5), "d"="5"@6(create 6, v1)}, leases [1 5]`},
		{name: "grant a too long TTL", req: grant(9, maxLeaseTTLSeconds+1), want: "error LeaseTTLTooLarge"},
		{name: "revoke deletes attached keys", req: revoke(5), want: "ok @rev 7",
			state: `rev 7, {"a"="3"@4(create 2, v2), "b"="2"@3(create 3, v1), "d"="5"@6(create 6, v1)}`},
		{name: "revoke a missing lease", req: revoke(42), want: "error LeaseNotFound"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sc := baseScript()
			req, err := convertRequest(c.req)
			if err != nil {
				t.Fatal(err)
			}
			cfg := &applyConfig{minLeaseTTL: 1}
			if c.past {
				cfg.past = sc
			}
			before := sc.s.String()
			next, resp := apply(sc.s, req, cfg, nil)
			if got := resp.String(); got != c.want {
				t.Errorf("response\n got %s\nwant %s", got, c.want)
			}
			wantState := c.state
			if wantState == "" {
				wantState = before
			}
			if got := next.String(); got != wantState {
				t.Errorf("state\n got %s\nwant %s", got, wantState)
			}
			if sc.s.String() != before {
				t.Errorf("apply changed the state it was given: %s", sc.s)
			}
			if next.hash() != rehash(next).hash() {
				t.Errorf("incremental hash differs from a fresh one")
			}
		})
	}
}

// rehash rebuilds a state from scratch, so its hash is computed afresh.
func rehash(s *state) *state {
	f := &state{revision: s.revision, compactRevision: s.compactRevision, nextLeaseID: s.nextLeaseID}
	for _, kv := range s.keys {
		f.keys = append(f.keys, kv)
		f.contentHash ^= hashKeyValue(kv)
	}
	for _, l := range s.leases {
		f.leases = append(f.leases, l)
		f.contentHash ^= hashLease(l)
	}
	return f
}

func TestCompactionErrors(t *testing.T) {
	sc := baseScript()
	sc.op(0, 20, 21, Request{Compact: &pb.CompactionRequest{Revision: 4}})
	for _, c := range []struct {
		req  Request
		want string
	}{
		{Request{Compact: &pb.CompactionRequest{Revision: 4}}, "error Compacted"},
		{Request{Compact: &pb.CompactionRequest{Revision: 3}}, "error Compacted"},
		{rangeReq("a", "", func(r *pb.RangeRequest) { r.Revision = 3 }), "error Compacted"},
		{rangeReq("a", "", func(r *pb.RangeRequest) { r.Revision = 4 }), `["a"="3"@4(create 2, v2)] count 1 @rev 6`},
		{txn(nil, []*pb.RequestOp{opPut("a", "x"), {Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), Revision: 3}}}}, nil), "error Compacted"},
	} {
		req, err := convertRequest(c.req)
		if err != nil {
			t.Fatal(err)
		}
		_, resp := apply(sc.s, req, &applyConfig{past: sc}, nil)
		if got := resp.String(); got != c.want {
			t.Errorf("%s: got %s, want %s", req, got, c.want)
		}
	}
}

// Ties under a non-key sort may come in any order and be cut anywhere by the
// limit; everything else about the result is exact.
func TestSortTiesMatchInAnyOrder(t *testing.T) {
	sc := baseScript()
	q := rangeReq("a", "z", func(r *pb.RangeRequest) { r.SortTarget, r.Limit = pb.RangeRequest_VERSION, 2 })
	req, _ := convertRequest(q)
	_, exp := apply(sc.s, req, &applyConfig{}, nil)
	kv := func(key string) keyValue { v, _ := sc.s.get(key); return v }
	for _, c := range []struct {
		kvs []keyValue
		ok  bool
	}{
		{[]keyValue{kv("b"), kv("c")}, true},
		{[]keyValue{kv("d"), kv("b")}, true},  // another cut of the version-1 tie
		{[]keyValue{kv("b"), kv("a")}, false}, // a has version 2: not among the first two
		{[]keyValue{kv("b"), kv("b")}, false}, // a key twice
		{[]keyValue{kv("b")}, false},          // too short
	} {
		obs := &response{kind: kindRange, revision: 6, rng: &rangeResult{kvs: c.kvs, count: 4, more: true}}
		if got := matches(req, exp, obs, &matchConfig{}, true); got != c.ok {
			t.Errorf("%v: match %v, want %v", c.kvs, got, c.ok)
		}
	}
}

func TestValidationErrors(t *testing.T) {
	many := func(n int) []*pb.RequestOp {
		ops := make([]*pb.RequestOp, n)
		for i := range ops {
			ops[i] = opGet(fmt.Sprint("k", i))
		}
		return ops
	}
	delRange := func(key, end string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}}
	}
	for _, c := range []struct {
		name string
		req  Request
		want []errorKind
	}{
		{"valid put", put("a", "1"), nil},
		{"empty key", put("", "1"), []errorKind{errEmptyKey}},
		{"value with ignore_value", Request{Put: &pb.PutRequest{Key: []byte("a"), Value: []byte("1"), IgnoreValue: true}}, []errorKind{errValueProvided}},
		{"lease with ignore_lease", Request{Put: &pb.PutRequest{Key: []byte("a"), Lease: 1, IgnoreLease: true}}, []errorKind{errLeaseProvided}},
		{"bad sort order", rangeReq("a", "", func(r *pb.RangeRequest) { r.SortOrder = 9 }), []errorKind{errInvalidSortOption}},
		{"empty delete key", del(""), []errorKind{errEmptyKey}},
		{"txn at the limit", txn(nil, many(8), nil), nil},
		{"txn over the limit", txn(nil, many(9), nil), []errorKind{errTooManyOps}},
		{"nested txn over what is left", txn(nil, append(many(6), opTxn(txn(nil, many(3), nil))), nil), []errorKind{errTooManyOps}},
		{"nested txn within what is left", txn(nil, append(many(6), opTxn(txn(nil, many(1), nil))), nil), nil},
		{"empty op", txn(nil, []*pb.RequestOp{{}}, nil), []errorKind{errEmptyOp}},
		{"put twice", txn(nil, []*pb.RequestOp{opPut("a", "1"), opPut("a", "2")}, nil), []errorKind{errDuplicateKey}},
		{"put in a deleted range", txn(nil, []*pb.RequestOp{delRange("a", "c"), opPut("b", "2")}, nil), []errorKind{errDuplicateKey}},
		{"put beside a deleted range", txn(nil, []*pb.RequestOp{delRange("a", "c"), opPut("c", "2")}, nil), nil},
		{"put in a from-key delete: etcd and the docs disagree", txn(nil, []*pb.RequestOp{delRange("a", "\x00"), opPut("b", "2")}, nil), []errorKind{errDuplicateKey, errNone}},
		{"nested put of a key put outside", txn(nil, []*pb.RequestOp{opPut("a", "1"), opTxn(txn(nil, []*pb.RequestOp{opPut("a", "2")}, nil))}, nil), []errorKind{errDuplicateKey}},
		{"one key in both branches of a nested txn", txn(nil, []*pb.RequestOp{opTxn(txn(nil, []*pb.RequestOp{opPut("a", "1")}, []*pb.RequestOp{opPut("a", "2")}))}, nil), nil},
		{"branches are checked apart", txn(nil, []*pb.RequestOp{opPut("a", "1")}, []*pb.RequestOp{opPut("a", "2")}), nil},
	} {
		req, err := convertRequest(c.req)
		if err != nil {
			t.Fatal(err)
		}
		if got := validationErrors(req, 8); !slices.Equal(got, c.want) {
			t.Errorf("%s: %s: got %v, want %v", c.name, req, got, c.want)
		}
	}
}

func TestClassifyError(t *testing.T) {
	put, _ := convertRequest(put("a", "1"))
	emptyOpTxn, _ := convertRequest(txn(nil, []*pb.RequestOp{{}}, nil))
	for _, c := range []struct {
		err  error
		req  *request
		want errorKind
	}{
		{nil, put, errNone},
		{rpctypes.ErrGRPCLeaseNotFound, put, errLeaseNotFound},
		{rpctypes.ErrLeaseNotFound, put, errLeaseNotFound}, // the client-side twin
		{rpctypes.ErrGRPCCompacted, put, errCompacted},
		{rpctypes.ErrGRPCKeyNotFound, put, errKeyNotFound},
		{rpctypes.ErrGRPCKeyNotFound, emptyOpTxn, errEmptyOp},
		{rpctypes.ErrGRPCTimeout, put, errIndeterminate},
		{rpctypes.ErrGRPCNoLeader, put, errIndeterminate},
		{rpctypes.ErrGRPCNoSpace, put, errIndeterminate},
		{errors.New("context deadline exceeded"), put, errIndeterminate},
	} {
		if got := classifyError(c.err, c.req); got != c.want {
			t.Errorf("%v on %s: got %s, want %s", c.err, c.req, got, c.want)
		}
	}
}

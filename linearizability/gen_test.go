package linearizability

import (
	"fmt"
	"math/rand/v2"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// The generator builds a correct run: each client's operations get a call
// time, a linearization point inside the call and a return time; the
// operations are then applied one by one in linearization order to the
// reference model (apply), which gives every response, every committed
// entry and every event. A correct run must pass every checker; the tests
// mutate one piece of it to plant a bug.

type genConfig struct {
	seed            uint64
	clients         int
	ops             int
	keys            int
	unknownPerMille int // operations whose outcome the client never learns
	watches         int
	leases          bool // lease grants, puts with leases, revokes, expiries
	compactions     bool
	maxTxnOps       int
}

// generated is a run and the ground truth behind it.
type generated struct {
	in Input
	// applied[i] says whether history operation i took effect (reads: was
	// answered); entryOf[i] is its committed position or -1.
	applied []bool
	entryOf []int
	// firstState[rev] is the state when rev was first reached.
	firstState []*state
	events     []event
}

func (g *generated) stateAt(rev int64) *state {
	if rev < 1 || rev >= int64(len(g.firstState)) {
		return nil
	}
	return g.firstState[rev]
}

type genOp struct {
	index   int
	client  int
	call    int64
	lin     int64
	ret     int64
	unknown bool // the client never learns the outcome
	applies bool // for unknown writes: whether it takes effect
	req     Request
	cluster bool // a committed entry no client sends (lease expiry)
	// readAt, for a serializable read, says how many revisions stale it is.
	staleBy int64
}

func genKey(rng *rand.Rand, keys int) string {
	return fmt.Sprintf("key/%02d", rng.IntN(keys))
}

func generate(cfg genConfig) *generated {
	rng := rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15))
	if cfg.maxTxnOps == 0 {
		cfg.maxTxnOps = defaultMaxTxnOps
	}
	var ops []*genOp
	clientTime := make([]int64, cfg.clients)
	leaseIDs := []int64{1, 2, 3} // the first IDs a store picks
	nextLease := int64(1000)
	valueSeq := 0
	value := func() []byte {
		valueSeq++
		return []byte(fmt.Sprintf("v%d", valueSeq))
	}
	for i := 0; i < cfg.ops; i++ {
		c := rng.IntN(cfg.clients)
		op := &genOp{index: len(ops), client: c}
		op.call = clientTime[c] + 1 + rng.Int64N(2000)
		op.lin = op.call + 1 + rng.Int64N(4000)
		op.ret = op.lin + 1 + rng.Int64N(4000)
		op.unknown = rng.IntN(1000) < cfg.unknownPerMille
		op.applies = !op.unknown || rng.IntN(2) == 0
		if op.unknown {
			clientTime[c] = op.call + 20000 // the client times out and moves on
		} else {
			clientTime[c] = op.ret
		}
		op.req = genRequest(rng, cfg, &leaseIDs, &nextLease, value, op)
		ops = append(ops, op)
		if cfg.leases && rng.IntN(100) < 3 {
			// The cluster expires a lease: a revoke no client sent, of a
			// lease alive when it applies (picked then).
			t := op.lin + rng.Int64N(3000)
			ops = append(ops, &genOp{index: -1, client: -1, call: t, lin: t, ret: t, cluster: true,
				req: Request{LeaseRevoke: &pb.LeaseRevokeRequest{ID: -1}}})
		}
	}
	return execute(cfg, rng, ops)
}

func genRequest(rng *rand.Rand, cfg genConfig, leaseIDs *[]int64, nextLease *int64, value func() []byte, op *genOp) Request {
	key := []byte(genKey(rng, cfg.keys))
	roll := rng.IntN(100)
	switch {
	case roll < 30:
		return Request{Range: &pb.RangeRequest{Key: key}}
	case roll < 36:
		r := &pb.RangeRequest{Key: []byte("key/"), RangeEnd: []byte("key0")}
		switch rng.IntN(6) {
		case 0:
			r.Limit = 1 + rng.Int64N(4)
		case 1:
			r.SortTarget, r.SortOrder = pb.RangeRequest_MOD, pb.RangeRequest_DESCEND
			r.Limit = rng.Int64N(4)
		case 2:
			r.KeysOnly = true
		case 3:
			r.CountOnly = true
		case 4:
			r.SortTarget = pb.RangeRequest_VERSION
			r.MinModRevision = 2
		case 5:
			r.Key, r.RangeEnd = []byte("key/0"), []byte{0}
		}
		return Request{Range: r}
	case roll < 39:
		op.staleBy = rng.Int64N(4)
		return Request{Range: &pb.RangeRequest{Key: key, Serializable: true}}
	case roll < 42:
		// A read at a past revision; the revision is filled at execution.
		return Request{Range: &pb.RangeRequest{Key: []byte("key/"), RangeEnd: []byte("key0"), Revision: -1}}
	case roll < 62:
		p := &pb.PutRequest{Key: key, Value: value(), PrevKv: rng.IntN(4) == 0}
		if cfg.leases && len(*leaseIDs) > 0 && rng.IntN(4) == 0 {
			p.Lease = (*leaseIDs)[rng.IntN(len(*leaseIDs))]
		}
		return Request{Put: p}
	case roll < 68:
		d := &pb.DeleteRangeRequest{Key: key, PrevKv: rng.IntN(2) == 0}
		if rng.IntN(5) == 0 {
			d.Key, d.RangeEnd = []byte("key/0"), []byte("key/1")
		}
		return Request{DeleteRange: d}
	case roll < 86:
		return Request{Txn: genTxn(rng, cfg, key, value, 0)}
	case roll < 89 && cfg.compactions:
		return Request{Compact: &pb.CompactionRequest{Revision: -1}} // filled at execution
	case roll < 94 && cfg.leases:
		g := &pb.LeaseGrantRequest{TTL: 1 + rng.Int64N(10)}
		if rng.IntN(2) == 0 {
			*nextLease++
			g.ID = *nextLease
			*leaseIDs = append(*leaseIDs, g.ID)
		}
		return Request{LeaseGrant: g}
	case roll < 97 && cfg.leases && len(*leaseIDs) > 0:
		return Request{LeaseRevoke: &pb.LeaseRevokeRequest{ID: (*leaseIDs)[rng.IntN(len(*leaseIDs))]}}
	}
	return Request{Range: &pb.RangeRequest{Key: key}}
}

func genTxn(rng *rand.Rand, cfg genConfig, key []byte, value func() []byte, depth int) *pb.TxnRequest {
	t := &pb.TxnRequest{}
	switch rng.IntN(4) {
	case 0:
		t.Compare = append(t.Compare, &pb.Compare{Key: key, Target: pb.Compare_MOD, Result: pb.Compare_LESS,
			TargetUnion: &pb.Compare_ModRevision{ModRevision: 1 + rng.Int64N(int64(cfg.ops)/4+2)}})
	case 1:
		t.Compare = append(t.Compare, &pb.Compare{Key: key, Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_Version{Version: rng.Int64N(3)}})
	case 2:
		t.Compare = append(t.Compare, &pb.Compare{Key: []byte("key/"), RangeEnd: []byte("key0"), Target: pb.Compare_CREATE,
			Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 1 + rng.Int64N(5)}})
	case 3:
		t.Compare = append(t.Compare, &pb.Compare{Key: key, Target: pb.Compare_VALUE, Result: pb.Compare_NOT_EQUAL,
			TargetUnion: &pb.Compare_Value{Value: []byte("v1")}})
	}
	other := []byte(genKey(rng, cfg.keys))
	t.Success = append(t.Success, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Value: value(), PrevKv: true}}})
	if string(other) != string(key) && rng.IntN(2) == 0 {
		t.Success = append(t.Success, &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: other}}})
	}
	t.Success = append(t.Success, &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: key}}})
	t.Failure = append(t.Failure, &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: key}}})
	if depth == 0 && rng.IntN(4) == 0 {
		nested := genTxn(rng, cfg, other, value, 1)
		if string(other) == string(key) {
			nested.Success, nested.Failure = nested.Failure, nil // keep puts of one key apart
		}
		t.Failure = append(t.Failure, &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: nested}})
	}
	return t
}

// execute applies the operations in linearization order and fills the run.
func execute(cfg genConfig, rng *rand.Rand, ops []*genOp) *generated {
	g := &generated{firstState: []*state{nil, initialState()}}
	byLin := slices.Clone(ops)
	slices.SortStableFunc(byLin, func(a, b *genOp) int {
		if a.lin != b.lin {
			if a.lin < b.lin {
				return -1
			}
			return 1
		}
		return 0
	})
	history := make([]Operation, 0, len(ops))
	indexOf := map[*genOp]int{}
	for _, op := range ops {
		if op.cluster {
			continue
		}
		indexOf[op] = len(history)
		history = append(history, Operation{Client: op.client, Call: op.call, Return: op.ret, Request: op.req,
			RequestID: uint64(len(history) + 1)})
	}
	g.applied = make([]bool, len(history))
	g.entryOf = make([]int, len(history))
	for i := range g.entryOf {
		g.entryOf[i] = -1
	}
	s := g.firstState[1]
	cfgApply := &applyConfig{minLeaseTTL: 2, past: g}
	serverLease := int64(1 << 40)
	var leaseEvents []LeaseEvent
	leaseEvents = append(leaseEvents, LeaseEvent{Member: 1, LocalTick: 0, Kind: LeaseBecameLeader, ElectionTicks: 10})
	leaseTTL := map[int64]int64{}
	leaseLastTick := map[int64]int64{}
	for _, op := range byLin {
		q := op.req
		// Fill what depends on the state at the linearization point.
		if q.Range != nil && q.Range.Revision == -1 {
			q.Range.Revision = max(s.compactRevision, 1) + rng.Int64N(s.revision-max(s.compactRevision, 1)+1)
		}
		if q.Compact != nil && q.Compact.Revision == -1 {
			q.Compact.Revision = max(1, s.revision-rng.Int64N(8))
		}
		if q.LeaseRevoke != nil && q.LeaseRevoke.ID == -1 {
			if len(s.leases) == 0 {
				continue
			}
			q.LeaseRevoke.ID = s.leases[rng.IntN(len(s.leases))]
		}
		var raw *pb.InternalRaftRequest
		req, err := convertRequest(q)
		if err != nil {
			panic(err)
		}
		if q.LeaseGrant != nil {
			lg := &pb.LeaseGrantRequest{ID: q.LeaseGrant.ID, TTL: q.LeaseGrant.TTL}
			if lg.ID == 0 && rng.IntN(2) == 0 {
				// etcd picks the ID before proposing; noded logs the 0 and
				// its store picks at apply.
				serverLease++
				lg.ID = serverLease
			}
			raw = &pb.InternalRaftRequest{LeaseGrant: lg}
			req = convertLeaseGrant(lg)
		} else {
			raw = internalRequest(q)
		}
		i, isClient := indexOf[op]
		if isClient && op.unknown && !op.applies {
			history[i].Return = Unknown
			continue
		}
		before := s
		var resp *response
		if q.Range != nil && q.Range.Serializable {
			at := g.stateAt(max(1, s.revision-op.staleBy))
			_, resp = apply(at, req, cfgApply, nil)
		} else {
			rec := &recorder{}
			s, resp = apply(s, req, cfgApply, rec)
			g.events = append(g.events, rec.events...)
			if s.revision > before.revision {
				g.firstState = append(g.firstState, s)
			}
		}
		if req.isWrite() {
			id := uint64(0)
			if isClient {
				id = history[i].RequestID
				g.entryOf[i] = len(g.in.Committed)
			} else {
				id = uint64(1<<50) + uint64(len(g.in.Committed))
			}
			g.in.Committed = append(g.in.Committed, CommittedEntry{Index: uint64(len(g.in.Committed) + 10), RequestID: id, Request: raw})
		}
		tick := op.lin / 1000
		if resp.err == errNone {
			switch req.kind {
			case kindLeaseGrant:
				leaseEvents = append(leaseEvents, LeaseEvent{Member: 1, LocalTick: tick, Lease: resp.leaseID, Kind: LeaseGranted, TTLTicks: resp.leaseTTL * 10, ElectionTicks: 10})
				leaseTTL[resp.leaseID] = resp.leaseTTL * 10
				leaseLastTick[resp.leaseID] = tick
			case kindLeaseRevoke:
				if !isClient {
					// Expiry: proposed once the TTL has run out on the leader,
					// counted from the tick after the grant.
					expiry := max(tick, leaseLastTick[req.leaseID]+leaseTTL[req.leaseID]+1)
					leaseEvents = append(leaseEvents, LeaseEvent{Member: 1, LocalTick: expiry, Lease: req.leaseID, Kind: LeaseExpiryProposed, ElectionTicks: 10})
				}
			}
		}
		if !isClient {
			continue
		}
		g.applied[i] = true
		if op.unknown {
			history[i].Return = Unknown
			continue
		}
		history[i].Response = toProtoResponse(req, resp)
	}
	// Lease events must come in tick order per member for the report to read
	// well; the checker sorts them anyway.
	slices.SortStableFunc(leaseEvents, func(a, b LeaseEvent) int {
		switch {
		case a.LocalTick < b.LocalTick:
			return -1
		case a.LocalTick > b.LocalTick:
			return 1
		}
		return 0
	})
	g.in.History = history
	g.in.Leases = leaseEvents
	g.in.MinLeaseTTLSeconds = 2
	g.in.MaxTxnOps = cfg.maxTxnOps
	for w := 0; w < cfg.watches; w++ {
		g.in.Watches = append(g.in.Watches, g.genWatch(rng, cfg, w))
	}
	return g
}

func internalRequest(q Request) *pb.InternalRaftRequest {
	return &pb.InternalRaftRequest{Range: q.Range, Put: q.Put, DeleteRange: q.DeleteRange, Txn: q.Txn,
		Compaction: q.Compact, LeaseGrant: q.LeaseGrant, LeaseRevoke: q.LeaseRevoke}
}

// genWatch builds what a correct watcher sees: created, then the matching
// events in revision order, several revisions per response at times,
// progress notifications between, and an end at a random revision.
func (g *generated) genWatch(rng *rand.Rand, cfg genConfig, n int) WatchHistory {
	final := int64(len(g.firstState) - 1)
	create := &pb.WatchCreateRequest{Key: []byte("key/"), RangeEnd: []byte("key0"), PrevKv: rng.IntN(2) == 0, ProgressNotify: true}
	if rng.IntN(3) == 0 {
		create.Key, create.RangeEnd = []byte(genKey(rng, cfg.keys)), nil
	}
	switch rng.IntN(4) {
	case 0:
		create.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}
	case 1:
		create.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}
	}
	w := WatchHistory{Client: n, Member: uint64(1 + n%3), Create: create}
	createdAt := 1 + rng.Int64N(final)
	from := createdAt + 1
	if rng.IntN(2) == 0 {
		create.StartRevision = 1 + rng.Int64N(final)
		from = create.StartRevision
	}
	end := from + rng.Int64N(final-from+2)
	wc := &watchCheck{keys: newKeyRange(create.Key, create.RangeEnd)}
	for _, f := range create.Filters {
		wc.noPut = wc.noPut || f == pb.WatchCreateRequest_NOPUT
		wc.noDel = wc.noDel || f == pb.WatchCreateRequest_NODELETE
	}
	t := int64(0)
	send := func(resp *pb.WatchResponse) {
		t += 1 + rng.Int64N(100)
		w.Responses = append(w.Responses, WatchReceived{Time: t, Resp: resp})
	}
	send(&pb.WatchResponse{Header: &pb.ResponseHeader{Revision: createdAt}, Created: true})
	var pending []*mvccpb.Event
	pendingRev := int64(0)
	flush := func() {
		if len(pending) > 0 {
			send(&pb.WatchResponse{Header: &pb.ResponseHeader{Revision: pendingRev}, Events: pending})
			pending = nil
		}
	}
	for _, e := range g.events {
		if e.revision < from || e.revision > end {
			continue
		}
		if e.revision != pendingRev && rng.IntN(3) != 0 {
			flush()
			if rng.IntN(8) == 0 {
				send(&pb.WatchResponse{Header: &pb.ResponseHeader{Revision: e.revision - 1}})
			}
		}
		pendingRev = e.revision
		if !wc.wants(e) {
			continue
		}
		pe := &mvccpb.Event{Type: e.typ, Kv: toProtoKV(e.kv)}
		if create.PrevKv && e.prevKV != nil {
			pe.PrevKv = toProtoKV(*e.prevKV)
		}
		pending = append(pending, pe)
	}
	flush()
	return w
}

func toProtoKV(kv keyValue) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(kv.key), Value: []byte(kv.value), CreateRevision: kv.createRevision,
		ModRevision: kv.modRevision, Version: kv.version, Lease: kv.lease}
}

func toProtoKVs(kvs []keyValue, keysOnly bool) []*mvccpb.KeyValue {
	var out []*mvccpb.KeyValue
	for _, kv := range kvs {
		p := toProtoKV(kv)
		if keysOnly {
			p.Value = nil
		}
		out = append(out, p)
	}
	return out
}

// protoError is the error the server sends for a model error.
func protoError(e errorKind) error {
	switch e {
	case errCompacted:
		return rpctypes.ErrGRPCCompacted
	case errFutureRev:
		return rpctypes.ErrGRPCFutureRev
	case errLeaseNotFound:
		return rpctypes.ErrGRPCLeaseNotFound
	case errKeyNotFound, errEmptyOp:
		return rpctypes.ErrGRPCKeyNotFound
	case errLeaseExist:
		return rpctypes.ErrGRPCLeaseExist
	case errLeaseTTLTooLarge:
		return rpctypes.ErrGRPCLeaseTTLTooLarge
	case errEmptyKey:
		return rpctypes.ErrGRPCEmptyKey
	case errValueProvided:
		return rpctypes.ErrGRPCValueProvided
	case errLeaseProvided:
		return rpctypes.ErrGRPCLeaseProvided
	case errTooManyOps:
		return rpctypes.ErrGRPCTooManyOps
	case errDuplicateKey:
		return rpctypes.ErrGRPCDuplicateKey
	case errInvalidSortOption:
		return rpctypes.ErrGRPCInvalidSortOption
	case errRequestTooLarge:
		return rpctypes.ErrGRPCRequestTooLarge
	}
	return rpctypes.ErrGRPCTimeout
}

// toProtoResponse renders a model response as the client would receive it.
func toProtoResponse(req *request, r *response) Response {
	if r.err != errNone {
		return Response{Err: protoError(r.err)}
	}
	h := &pb.ResponseHeader{Revision: r.revision}
	switch req.kind {
	case kindRange:
		return Response{Range: toProtoRange(r, h)}
	case kindPut:
		return Response{Put: toProtoPut(r, h)}
	case kindDeleteRange:
		return Response{DeleteRange: toProtoDelete(r, h)}
	case kindTxn:
		return Response{Txn: toProtoTxn(req.txn, r, h)}
	case kindCompact:
		return Response{Compact: &pb.CompactionResponse{Header: h}}
	case kindLeaseGrant:
		return Response{LeaseGrant: &pb.LeaseGrantResponse{Header: h, ID: r.leaseID, TTL: r.leaseTTL}}
	case kindLeaseRevoke:
		return Response{LeaseRevoke: &pb.LeaseRevokeResponse{Header: h}}
	}
	panic("no response for " + req.kind.String())
}

func toProtoRange(r *response, h *pb.ResponseHeader) *pb.RangeResponse {
	return &pb.RangeResponse{Header: h, Kvs: toProtoKVs(r.rng.kvs, r.rng.keysOnly), Count: r.rng.count, More: r.rng.more}
}

func toProtoPut(r *response, h *pb.ResponseHeader) *pb.PutResponse {
	p := &pb.PutResponse{Header: h}
	if r.prevKV != nil {
		p.PrevKv = toProtoKV(*r.prevKV)
	}
	return p
}

func toProtoDelete(r *response, h *pb.ResponseHeader) *pb.DeleteRangeResponse {
	return &pb.DeleteRangeResponse{Header: h, Deleted: r.deleted, PrevKvs: toProtoKVs(r.prevKVs, false)}
}

func toProtoTxn(t *txnOp, r *response, h *pb.ResponseHeader) *pb.TxnResponse {
	out := &pb.TxnResponse{Header: h, Succeeded: r.txn.succeeded}
	branch := t.success
	if !r.txn.succeeded {
		branch = t.failure
	}
	for i, sub := range r.txn.responses {
		sh := &pb.ResponseHeader{Revision: sub.revision}
		var op *pb.ResponseOp
		switch sub.kind {
		case kindRange:
			op = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: toProtoRange(sub, sh)}}
		case kindPut:
			op = &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: toProtoPut(sub, sh)}}
		case kindDeleteRange:
			op = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: toProtoDelete(sub, sh)}}
		case kindTxn:
			op = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: toProtoTxn(branch[i].txn, sub, &pb.ResponseHeader{})}}
		default:
			op = &pb.ResponseOp{}
		}
		out.Responses = append(out.Responses, op)
	}
	return out
}

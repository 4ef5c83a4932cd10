package linearizability

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// script builds small correct runs by hand: operations are listed in the
// order they take effect, each with its own [call, return] interval, and the
// reference model answers them. Planted-bug tests then change one piece.
type script struct {
	in         Input
	s          *state
	firstState []*state
	events     []event
	cfg        applyConfig
	nextID     uint64
}

func newScript() *script {
	sc := &script{s: initialState(), firstState: []*state{nil, initialState()}, nextID: 1}
	sc.s = sc.firstState[1]
	sc.cfg = applyConfig{minLeaseTTL: 1, past: sc}
	sc.in.MinLeaseTTLSeconds = 1
	return sc
}

func (sc *script) stateAt(rev int64) *state {
	if rev < 1 || rev >= int64(len(sc.firstState)) {
		return nil
	}
	return sc.firstState[rev]
}

// step applies q now and logs it if it is a write; it returns the response
// and the request ID it was logged under.
func (sc *script) step(q Request) (*request, *response, uint64) {
	req, err := convertRequest(q)
	if err != nil {
		panic(err)
	}
	rec := &recorder{}
	before := sc.s
	var resp *response
	sc.s, resp = apply(sc.s, req, &sc.cfg, rec)
	sc.events = append(sc.events, rec.events...)
	if sc.s.revision > before.revision {
		sc.firstState = append(sc.firstState, sc.s)
	}
	id := sc.nextID
	sc.nextID++
	if req.isWrite() {
		sc.in.Committed = append(sc.in.Committed, CommittedEntry{Index: uint64(len(sc.in.Committed) + 1), RequestID: id, Request: internalRequest(q)})
	}
	return req, resp, id
}

// op runs a request of client c sent at call and answered at ret; it
// returns the operation's index in the history.
func (sc *script) op(c int, call, ret int64, q Request) int {
	req, resp, id := sc.step(q)
	sc.in.History = append(sc.in.History, Operation{Client: c, Call: call, Return: ret, Request: q,
		Response: toProtoResponse(req, resp), RequestID: id})
	return len(sc.in.History) - 1
}

// serializable answers a serializable range from the state at rev.
func (sc *script) serializable(c int, call, ret int64, rev int64, q Request) int {
	req, err := convertRequest(q)
	if err != nil {
		panic(err)
	}
	_, resp := apply(sc.stateAt(rev), req, &sc.cfg, nil)
	sc.in.History = append(sc.in.History, Operation{Client: c, Call: call, Return: ret, Request: q, Response: toProtoResponse(req, resp)})
	return len(sc.in.History) - 1
}

// unknown runs a request whose outcome the client never learns; applied
// says whether the cluster applied (and logged) it.
func (sc *script) unknown(c int, call int64, q Request, applied bool) int {
	id := uint64(0)
	if applied {
		_, _, id = sc.step(q)
	} else {
		id = sc.nextID
		sc.nextID++
	}
	sc.in.History = append(sc.in.History, Operation{Client: c, Call: call, Return: Unknown, Request: q, RequestID: id})
	return len(sc.in.History) - 1
}

// cluster applies a write no client sent (a lease expiry).
func (sc *script) cluster(q Request) {
	sc.step(q)
}

// watch builds what a correct watcher of create sees, created when the
// store was at createdAt, up to revision upTo: one response per revision.
func (sc *script) watch(c int, create *pb.WatchCreateRequest, createdAt, upTo int64) WatchHistory {
	key := create.GetKey()
	if len(key) == 0 {
		key = []byte{0}
	}
	wc := &watchCheck{keys: newKeyRange(key, create.GetRangeEnd())}
	for _, f := range create.GetFilters() {
		wc.noPut = wc.noPut || f == pb.WatchCreateRequest_NOPUT
		wc.noDel = wc.noDel || f == pb.WatchCreateRequest_NODELETE
	}
	from := create.GetStartRevision()
	if from == 0 {
		from = createdAt + 1
	}
	w := WatchHistory{Client: c, Member: 1, Create: create}
	t := int64(1000)
	w.Responses = append(w.Responses, WatchReceived{Time: t, Resp: &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: createdAt}, Created: true}})
	var cur *pb.WatchResponse
	for _, e := range sc.events {
		if e.revision < from || e.revision > upTo || !wc.wants(e) {
			continue
		}
		if cur == nil || cur.Header.Revision != e.revision {
			t += 10
			cur = &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: e.revision}}
			w.Responses = append(w.Responses, WatchReceived{Time: t, Resp: cur})
		}
		pe := &mvccpb.Event{Type: e.typ, Kv: toProtoKV(e.kv)}
		if create.GetPrevKv() && e.prevKV != nil {
			pe.PrevKv = toProtoKV(*e.prevKV)
		}
		cur.Events = append(cur.Events, pe)
	}
	return w
}

func put(key, value string) Request {
	return Request{Put: &pb.PutRequest{Key: []byte(key), Value: []byte(value)}}
}

func putLease(key, value string, lease int64) Request {
	return Request{Put: &pb.PutRequest{Key: []byte(key), Value: []byte(value), Lease: lease}}
}

func get(key string) Request {
	return Request{Range: &pb.RangeRequest{Key: []byte(key)}}
}

func del(key string) Request {
	return Request{DeleteRange: &pb.DeleteRangeRequest{Key: []byte(key)}}
}

func grant(id, ttl int64) Request {
	return Request{LeaseGrant: &pb.LeaseGrantRequest{ID: id, TTL: ttl}}
}

func revoke(id int64) Request {
	return Request{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}}
}

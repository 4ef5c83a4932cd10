package sim

import (
	"errors"
	"fmt"
	"strconv"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
	"github.com/noded/noded/linearizability"
	"github.com/noded/noded/node"
)

// client is one simulated etcd client. Like etcd's robustness clients, it
// has one request in flight at a time (so its own requests are ordered),
// gives up on a request after a timeout (its outcome then stays unknown:
// a write may still commit), and never retries a request that is not
// idempotent: retrying a put after a timeout is how clients of etcd lost
// updates (etcd #14890).
type client struct {
	index    int
	member   int // the member it talks to
	seq      uint64
	op       *clientOp
	leases   []heldLease
	dropped  []int64 // leases it saw revoked or expire; it tries them again now and then
	watches  []*clientWatch
	watchSeq uint64
	lastRev  int64        // the highest revision it has seen in a header
	final    bool         // its final read in the liveness phase succeeded
	lock     *lockSession // a lock it is taking, holding or releasing (lockworkload.go)
	v2       v2Client     // its v2 requests (v2.go)
}

type heldLease struct {
	id            int64
	ttlSeconds    int64
	nextKeepAlive int64
}

type clientOp struct {
	seq    uint64
	req    proto.Message
	hist   int   // index into the KV history, or -1
	sentAt int64 // virtual time the client sent it
	final  bool
}

// clientWatch is one watch stream with one watcher on it.
type clientWatch struct {
	client      int
	member      int
	incarnation int
	stream      uint64
	hist        int // index into w.watches
	watchID     int64
	// A stream is ordered both ways (it is one gRPC stream over TCP): each
	// direction's next message arrives no earlier than the previous one.
	lastToMember, lastToClient int64
	slow                       bool // its reader stalls now and then (SlowWatchers)
	created                    bool
	ended                      bool
	lastRev                    int64
}

// watchesPerClientMax bounds the watches a client keeps open.
const watchesPerClientMax = 2

func (w *world) setUpClients() {
	for i := 0; i < w.k.Clients; i++ {
		c := &client{index: i, member: w.wrng.IntN(len(w.members))}
		w.clients = append(w.clients, c)
		w.scheduleClient(c, w.thinkTime())
	}
}

// thinkTime spaces a client's requests so that all clients together offer
// OpsPerSecond.
func (w *world) thinkTime() int64 {
	meanNs := float64(w.k.Clients) * 1e9 / float64(w.k.OpsPerSecond)
	return int64(w.wrng.ExpFloat64() * meanNs)
}

func (w *world) scheduleClient(c *client, after int64) {
	w.q.schedule(event{at: w.now + after, kind: evClientNext, client: c.index})
}

func (w *world) clientLatency() int64 {
	return w.k.DelayMinUs*1000/2 + int64(w.wrng.ExpFloat64()*float64(w.k.DelayMeanUs*1000)/2)
}

func handleFor(c *client, seq uint64) node.Handle {
	return node.Handle(uint64(c.index+1)<<40 | seq)
}

func (w *world) clientNext(c *client) {
	if c.op != nil || w.phase == phaseDone {
		return
	}
	c.v2.op = nil // a v2 request continues from its reply, never from here
	if w.phase == phaseLiveness {
		if !c.final {
			w.issue(c, &pb.RangeRequest{Key: []byte(keyPrefix), RangeEnd: prefixEnd(keyPrefix)}, true)
			c.op.final = true
		}
		return
	}
	// Keepalives first: a lease a client holds must not lapse for want of one.
	for i := range c.leases {
		if c.leases[i].nextKeepAlive <= w.now {
			c.leases[i].nextKeepAlive = w.now + c.leases[i].ttlSeconds*1e9/3
			w.issue(c, &pb.LeaseKeepAliveRequest{ID: c.leases[i].id}, false)
			return
		}
	}
	if w.lockNext(c) {
		return
	}
	w.issueRandom(c)
}

// issue sends a request from a client to its member. inHistory puts it in
// the KV history the linearizability checker reads.
func (w *world) issue(c *client, req proto.Message, inHistory bool) {
	c.seq++
	op := &clientOp{seq: c.seq, req: req, hist: -1, sentAt: w.now}
	c.op = op
	if inHistory {
		op.hist = len(w.history)
		w.history = append(w.history, linearizability.Operation{
			Client: c.index, Call: w.now, Return: linearizability.Unknown, Request: requestOf(req),
		})
		w.handles[handleKey{c.member, handleFor(c, c.seq)}] = op.hist
		w.stats.Ops++
	}
	w.q.schedule(event{at: w.now + w.clientLatency(), kind: evRequestArrive, member: c.member, client: c.index, opSeq: c.seq,
		what: requestName(req)})
	w.q.schedule(event{at: w.now + w.k.ClientTimeoutMs*1e6, kind: evClientTimeout, client: c.index, opSeq: c.seq})
}

func requestOf(req proto.Message) linearizability.Request {
	var r linearizability.Request
	switch q := req.(type) {
	case *pb.RangeRequest:
		r.Range = q
	case *pb.PutRequest:
		r.Put = q
	case *pb.DeleteRangeRequest:
		r.DeleteRange = q
	case *pb.TxnRequest:
		r.Txn = q
	case *pb.CompactionRequest:
		r.Compact = q
	case *pb.LeaseGrantRequest:
		r.LeaseGrant = q
	case *pb.LeaseRevokeRequest:
		r.LeaseRevoke = q
	}
	return r
}

func (w *world) requestArrive(e *event) {
	m := w.members[e.member]
	c := w.clients[e.client]
	if c.op == nil || c.op.seq != e.opSeq || !m.up || m.paused {
		// A request to a down or frozen member is lost; the client times out.
		return
	}
	w.submitAs(m, handleFor(c, e.opSeq), proto.Clone(c.op.req))
	w.drive(m)
}

// resultToClient carries a member's answer back over the client's link.
func (w *world) resultToClient(m *member, r node.Result) {
	ci := int(uint64(r.Handle)>>40) - 1
	if ci < 0 || ci >= len(w.clients) {
		return // the operator's, handled in operator.go
	}
	if w.k.ReplyLoss && w.phase == phaseSafety && w.wrng.IntN(100) < 5 {
		return // the reply is lost after the member acted on the request
	}
	w.q.schedule(event{at: w.now + w.clientLatency(), kind: evReplyArrive, member: m.index, client: ci,
		opSeq: uint64(r.Handle) & (1<<40 - 1), result: r})
}

func (w *world) replyArrive(e *event) {
	c := w.clients[e.client]
	op := c.op
	if op == nil || op.seq != e.opSeq {
		return // it timed out already
	}
	r := e.result
	var notLeader *node.NotLeaderError
	if errors.As(r.Err, &notLeader) {
		// Only the leader serves it: go there (if known) and ask again; a
		// keepalive is safe to repeat.
		if lm := w.memberByID(notLeader.Leader); lm != nil {
			c.member = lm.index
		} else {
			c.member = w.wrng.IntN(len(w.members))
		}
		c.op = nil
		w.scheduleClient(c, w.clientLatency())
		return
	}
	c.op = nil
	if op.hist >= 0 {
		w.recordReturn(c, op, r)
	}
	if w.lockReply(c, op, r) || w.v2Continue(c, r) {
		return
	}
	switch req := op.req.(type) {
	case *pb.LeaseGrantRequest:
		if g, ok := r.Resp.(*pb.LeaseGrantResponse); ok && r.Err == nil && len(c.leases) < leasesPerClientMax {
			c.leases = append(c.leases, heldLease{id: g.GetID(), ttlSeconds: g.GetTTL(), nextKeepAlive: w.now + g.GetTTL()*1e9/3})
		}
	case *pb.LeaseKeepAliveRequest:
		ka, ok := r.Resp.(*pb.LeaseKeepAliveResponse)
		switch {
		case !ok || r.Err != nil:
		case ka.GetTTL() <= 0:
			c.dropLease(req.GetID())
		default:
			// The client may now count on the lease for TTL from sentAt:
			// the lease-expiry-time checker holds the cluster to that.
			w.keepAlives = append(w.keepAlives, linearizability.KeepAlive{
				Client: c.index, Lease: req.GetID(), Sent: op.sentAt, Return: w.now, TTLSeconds: ka.GetTTL(),
			})
		}
	case *pb.LeaseRevokeRequest:
		c.dropLease(req.GetID())
	}
	if rev := headerOf(r.Resp).GetRevision(); rev > c.lastRev {
		c.lastRev = rev
	}
	if op.final {
		if r.Err == nil {
			c.final = true
			return
		}
	}
	if r.Err != nil && w.wrng.IntN(2) == 0 {
		c.member = w.wrng.IntN(len(w.members))
	}
	w.scheduleClient(c, w.thinkTime())
}

func (c *client) dropLease(id int64) {
	for i, l := range c.leases {
		if l.id == id {
			c.leases = append(c.leases[:i], c.leases[i+1:]...)
			if len(c.dropped) == droppedLeasesMax {
				c.dropped = c.dropped[1:]
			}
			c.dropped = append(c.dropped, id)
			return
		}
	}
}

// droppedLeasesMax bounds the revoked leases a client remembers.
const droppedLeasesMax = 4

const leasesPerClientMax = 3

// indeterminate reports errors after which the client cannot know whether
// its request took effect: the member may have proposed it.
func indeterminate(err error) bool {
	return errors.Is(err, rpctypes.ErrGRPCTimeout) || errors.Is(err, rpctypes.ErrGRPCTimeoutDueToLeaderFail) ||
		errors.Is(err, rpctypes.ErrGRPCTimeoutDueToConnectionLost)
}

func (w *world) recordReturn(c *client, op *clientOp, r node.Result) {
	h := &w.history[op.hist]
	if r.Err != nil && indeterminate(r.Err) {
		w.stats.OpsUnknown++
		return // Return stays Unknown
	}
	h.Return = w.now
	if r.Err != nil {
		w.stats.OpsFailed++
		h.Response.Err = r.Err
		return
	}
	w.stats.OpsOK++
	switch resp := r.Resp.(type) {
	case *pb.RangeResponse:
		h.Response.Range = resp
	case *pb.PutResponse:
		h.Response.Put = resp
	case *pb.DeleteRangeResponse:
		h.Response.DeleteRange = resp
	case *pb.TxnResponse:
		h.Response.Txn = resp
	case *pb.CompactionResponse:
		h.Response.Compact = resp
	case *pb.LeaseGrantResponse:
		h.Response.LeaseGrant = resp
	case *pb.LeaseRevokeResponse:
		h.Response.LeaseRevoke = resp
	}
}

func (w *world) clientTimeout(c *client, seq uint64) {
	op := c.op
	if op == nil || op.seq != seq {
		return
	}
	c.op = nil
	if op.hist >= 0 {
		w.stats.OpsUnknown++ // Return stays Unknown
	}
	// Try another member: this one may be down or cut off.
	c.member = w.wrng.IntN(len(w.members))
	w.scheduleClient(c, 0)
}

// The workload: keys k00..kNN under one prefix, values unique per write so
// that every read names the write it saw.
const keyPrefix = "k"

func prefixEnd(prefix string) []byte {
	end := []byte(prefix)
	end[len(end)-1]++
	return end
}

func (w *world) key() []byte {
	n := w.wrng.IntN(w.k.Keys)
	key := append([]byte(keyPrefix), byte('0'+n/10%10), byte('0'+n%10))
	if n >= 100 {
		key = append([]byte(keyPrefix), strconv.Itoa(n)...)
	}
	return key
}

func (w *world) value(c *client) []byte {
	v := append([]byte{'c'}, strconv.Itoa(c.index)...)
	v = append(v, '.')
	return strconv.AppendUint(v, c.seq+1, 10)
}

// requestName names a request type in the trace (as %T would, without
// reflection on every request).
func requestName(req proto.Message) string {
	switch req.(type) {
	case *pb.RangeRequest:
		return "*etcdserverpb.RangeRequest"
	case *pb.PutRequest:
		return "*etcdserverpb.PutRequest"
	case *pb.DeleteRangeRequest:
		return "*etcdserverpb.DeleteRangeRequest"
	case *pb.TxnRequest:
		return "*etcdserverpb.TxnRequest"
	case *pb.CompactionRequest:
		return "*etcdserverpb.CompactionRequest"
	case *pb.LeaseGrantRequest:
		return "*etcdserverpb.LeaseGrantRequest"
	case *pb.LeaseRevokeRequest:
		return "*etcdserverpb.LeaseRevokeRequest"
	case *pb.LeaseKeepAliveRequest:
		return "*etcdserverpb.LeaseKeepAliveRequest"
	}
	return fmt.Sprintf("%T", req)
}

func (w *world) issueRandom(c *client) {
	k := w.k
	total := k.MixPut + k.MixRange + k.MixDelete + k.MixTxn + k.MixCompact + k.MixLease + k.MixWatch + k.MixV2 + k.MixLock
	x := w.wrng.IntN(max(total, 1))
	if x >= total-k.MixLock && w.startLock(c) {
		return
	}
	switch {
	case x >= total-k.MixLock-k.MixV2 && x < total-k.MixLock:
		w.issueV2(c)
		return
	case x < k.MixPut:
		put := &pb.PutRequest{Key: w.key(), Value: w.value(c), PrevKv: w.wrng.IntN(4) == 0}
		if len(c.leases) > 0 && w.wrng.IntN(3) == 0 {
			put.Lease = c.leases[w.wrng.IntN(len(c.leases))].id
		} else if len(c.dropped) > 0 && w.wrng.IntN(8) == 0 {
			// A put onto a lease that is gone must fail LeaseNotFound: a
			// key must never outlive its lease's revoke.
			put.Lease = c.dropped[w.wrng.IntN(len(c.dropped))]
		}
		w.issue(c, put, true)
		return
	case x < k.MixPut+k.MixRange:
		w.issue(c, w.randomRange(c), true)
		return
	case x < k.MixPut+k.MixRange+k.MixDelete:
		del := &pb.DeleteRangeRequest{Key: w.key(), PrevKv: w.wrng.IntN(3) == 0}
		if w.wrng.IntN(8) == 0 {
			del.RangeEnd = prefixEnd(string(del.Key[:len(keyPrefix)+1]))
			del.Key = del.Key[:len(keyPrefix)+1]
		}
		w.issue(c, del, true)
		return
	case x < k.MixPut+k.MixRange+k.MixDelete+k.MixTxn:
		w.issue(c, w.randomTxn(c), true)
		return
	case x < k.MixPut+k.MixRange+k.MixDelete+k.MixTxn+k.MixCompact:
		if c.lastRev > 2 {
			rev := max(1, c.lastRev-int64(w.wrng.IntN(30)))
			w.issue(c, &pb.CompactionRequest{Revision: rev, Physical: w.wrng.IntN(2) == 0}, true)
			return
		}
	case x < k.MixPut+k.MixRange+k.MixDelete+k.MixTxn+k.MixCompact+k.MixLease:
		if len(c.leases) > 0 && w.wrng.IntN(3) == 0 {
			w.issue(c, &pb.LeaseRevokeRequest{ID: c.leases[w.wrng.IntN(len(c.leases))].id}, true)
			return
		}
		if len(c.leases) < leasesPerClientMax {
			ttl := []int64{1, 2, 3, 5, 10}[w.wrng.IntN(5)]
			w.issue(c, &pb.LeaseGrantRequest{TTL: ttl}, true)
			return
		}
	default:
		if w.watchOp(c) {
			w.scheduleClient(c, w.thinkTime())
			return
		}
	}
	w.issue(c, &pb.RangeRequest{Key: w.key()}, true)
}

func (w *world) randomRange(c *client) *pb.RangeRequest {
	r := &pb.RangeRequest{Key: w.key()}
	switch w.wrng.IntN(10) {
	case 0, 1:
		r.Key, r.RangeEnd = []byte(keyPrefix), prefixEnd(keyPrefix)
		if w.wrng.IntN(2) == 0 {
			r.Limit = int64(1 + w.wrng.IntN(5))
		}
	case 2:
		r.RangeEnd = w.key()
		if string(r.RangeEnd) < string(r.Key) {
			r.Key, r.RangeEnd = r.RangeEnd, r.Key
		}
	case 3:
		if c.lastRev > 1 {
			// A read at a past revision: checked against the replay of the
			// committed log rather than by porcupine.
			r.Revision = max(1, c.lastRev-int64(w.wrng.IntN(20)))
			r.Serializable = w.wrng.IntN(2) == 0
		}
	case 4:
		r.Key, r.RangeEnd = []byte(keyPrefix), prefixEnd(keyPrefix)
		r.CountOnly = w.wrng.IntN(2) == 0
		r.KeysOnly = !r.CountOnly
	}
	return r
}

func (w *world) randomTxn(c *client) *pb.TxnRequest {
	k1, k2 := w.key(), w.key()
	switch w.wrng.IntN(4) {
	case 0: // compare-and-swap on the value
		return &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: k1, Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL,
				TargetUnion: &pb.Compare_Version{Version: 0}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: k1, Value: w.value(c)}}}},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: k1}}}},
		}
	case 1: // compare-and-swap on the mod revision, as a lock or an STM does
		return &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: k1, Target: pb.Compare_MOD, Result: pb.Compare_LESS,
				TargetUnion: &pb.Compare_ModRevision{ModRevision: c.lastRev}}},
			Success: []*pb.RequestOp{
				{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: k1, Value: w.value(c), PrevKv: true}}},
				{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: k2}}},
			},
		}
	case 2: // multi-key: write two keys or delete one, atomically
		if string(k1) == string(k2) {
			k2 = append(k2, '!')
		}
		return &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: k1, Target: pb.Compare_VALUE, Result: pb.Compare_NOT_EQUAL,
				TargetUnion: &pb.Compare_Value{Value: []byte("x")}}},
			Success: []*pb.RequestOp{
				{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: k1, Value: w.value(c)}}},
				{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: k2, Value: w.value(c)}}},
			},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: k2}}}},
		}
	default: // read-only, served by ReadIndex
		return &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: k1, Target: pb.Compare_CREATE, Result: pb.Compare_GREATER,
				TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: k1}}},
				{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: k2}}}},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(keyPrefix), RangeEnd: prefixEnd(keyPrefix), Limit: 3}}}},
		}
	}
}

// watchOp creates a watch, asks one for progress, or cancels one. It
// reports whether it did anything.
func (w *world) watchOp(c *client) bool {
	live := c.liveWatches()
	if len(live) > 0 && w.wrng.IntN(3) == 0 {
		cw := live[w.wrng.IntN(len(live))]
		if w.wrng.IntN(4) == 0 {
			w.sendWatchRequests(cw, &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: cw.watchID}}})
			return true
		}
		w.watches[cw.hist].RequestedProgressAt = append(w.watches[cw.hist].RequestedProgressAt, w.now)
		w.sendWatchRequests(cw, &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
		return true
	}
	if len(live) >= watchesPerClientMax {
		return false
	}
	cr := &pb.WatchCreateRequest{Key: []byte(keyPrefix), RangeEnd: prefixEnd(keyPrefix), PrevKv: w.wrng.IntN(2) == 0,
		ProgressNotify: w.wrng.IntN(2) == 0}
	if w.wrng.IntN(3) == 0 {
		cr.Key, cr.RangeEnd = w.key(), nil
	}
	switch w.wrng.IntN(5) {
	case 0, 1:
	case 2:
		cr.StartRevision = max(1, c.lastRev-int64(w.wrng.IntN(50)))
	case 3:
		cr.StartRevision = 1
	case 4:
		cr.StartRevision = c.lastRev + int64(1+w.wrng.IntN(5))
	}
	if w.wrng.IntN(6) == 0 {
		cr.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_FilterType(w.wrng.IntN(2))}
	}
	// A lagging watcher replays the whole history, and its client asks for
	// progress on the stream at once, while the catch-up is under way.
	lagging := w.k.LaggingWatchers && w.wrng.IntN(2) == 0
	if lagging {
		cr.StartRevision = 1
	}
	w.createWatch(c, cr, lagging)
	return true
}

func (c *client) liveWatches() []*clientWatch {
	var out []*clientWatch
	for _, cw := range c.watches {
		if !cw.ended {
			out = append(out, cw)
		}
	}
	return out
}

// createWatch opens a stream with one watcher. withProgress sends a
// progress request right behind the create, so that the member reads both
// off the stream before it polls its watchers: the watcher, when it
// starts in the past, is still catching up when the request is handled.
func (w *world) createWatch(c *client, cr *pb.WatchCreateRequest, withProgress bool) {
	c.watchSeq++
	m := w.members[c.member]
	cw := &clientWatch{client: c.index, member: c.member, incarnation: m.incarnation,
		stream: uint64(c.index+1)<<32 | c.watchSeq, hist: len(w.watches),
		slow: w.k.SlowWatchers && w.wrng.IntN(2) == 0}
	w.watches = append(w.watches, linearizability.WatchHistory{Client: c.index, Member: m.id, Create: cr})
	c.watches = append(c.watches, cw)
	w.streams[cw.stream] = cw
	if !m.up {
		cw.ended = true
		return
	}
	reqs := []*pb.WatchRequest{{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}}}
	if withProgress {
		w.watches[cw.hist].RequestedProgressAt = append(w.watches[cw.hist].RequestedProgressAt, w.now)
		reqs = append(reqs, &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
	}
	w.sendWatchRequests(cw, reqs...)
}

func (w *world) sendWatchRequests(cw *clientWatch, reqs ...*pb.WatchRequest) {
	cw.lastToMember = max(cw.lastToMember, w.now+w.clientLatency())
	w.q.schedule(event{at: cw.lastToMember, kind: evWatchRequestArrive, member: cw.member, incarnation: cw.incarnation,
		client: cw.client, stream: cw.stream, watchReqs: reqs, what: "watch-request"})
}

func (w *world) watchRequestArrive(e *event) {
	m := w.members[e.member]
	cw := w.streams[e.stream]
	if cw == nil || cw.ended || !m.up || m.incarnation != e.incarnation || m.paused {
		return
	}
	for _, req := range e.watchReqs {
		w.watchAs(m, kvsm.StreamID(e.stream), req)
	}
	w.drive(m)
}

func (w *world) watchToClient(m *member, sr kvsm.StreamResponse) {
	cw := w.streams[uint64(sr.Stream)]
	if cw == nil {
		return
	}
	if cw.slow && cw.created && w.phase == phaseSafety && w.wrng.IntN(20) == 0 {
		// The client stops reading for 1 to 10 s. Its stream backs up, and the
		// member, as a server with a full send queue does, stops queueing
		// live events for the watcher: it falls back to catching up from
		// history (etcd's victim watchers), under compaction and load.
		stall := 1e9 + w.wrng.Int64N(9e9)
		cw.lastToClient = max(cw.lastToClient, w.now) + stall
		m.node.WatchPause(sr.Stream, cw.watchID)
		w.tracef("watch stream %x stalls %dms", cw.stream, stall/1e6)
	}
	cw.lastToClient = max(cw.lastToClient, w.now+w.clientLatency())
	w.q.schedule(event{at: cw.lastToClient, kind: evWatchArrive, member: m.index, incarnation: m.incarnation,
		client: cw.client, stream: cw.stream, watchResp: sr.Resp, what: "watch-response"})
}

func (w *world) watchArrive(e *event) {
	cw := w.streams[e.stream]
	if cw == nil || cw.ended {
		return
	}
	resp := e.watchResp
	wh := &w.watches[cw.hist]
	wh.Responses = append(wh.Responses, linearizability.WatchReceived{Time: w.now, Resp: resp})
	w.stats.WatchEvents += int64(len(resp.GetEvents()))
	if resp.GetCreated() {
		cw.created = true
		cw.watchID = resp.GetWatchId()
	}
	for _, ev := range resp.GetEvents() {
		cw.lastRev = ev.GetKv().GetModRevision()
	}
	if resp.GetCanceled() {
		cw.ended = true
		delete(w.streams, cw.stream)
	}
}

// streamsBroken ends every watch stream on a member that went down; the
// client's gRPC stream would fail the same way. A client may resume later
// from the revision after the last it saw.
func (w *world) streamsBroken(m *member) {
	for _, c := range w.clients {
		for _, cw := range c.watches {
			if cw.member == m.index && !cw.ended {
				cw.ended = true
				delete(w.streams, cw.stream)
				if cw.lastRev > 0 && w.phase == phaseSafety && w.wrng.IntN(2) == 0 && len(c.liveWatches()) < watchesPerClientMax {
					old := w.watches[cw.hist].Create
					resume := proto.Clone(old).(*pb.WatchCreateRequest)
					resume.StartRevision = cw.lastRev + 1
					c.member = w.wrng.IntN(len(w.members))
					w.createWatch(c, resume, false)
				}
			}
		}
	}
}

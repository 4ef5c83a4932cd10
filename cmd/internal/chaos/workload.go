package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/linearizability"
)

// The workload: clients of go.etcd.io/etcd/client/v3, each one sequential,
// sending puts (each value unique, so every write can be found in the
// log), ranges linearizable and serializable (also at past revisions),
// deletes, txns with compares, compactions, lease grants, puts with leases,
// keepalives and revokes; and watchers from past revisions. Requests go
// through the client library's retrying gRPC clients (RetryKVClient,
// RetryLeaseClient), exactly as clientv3's own KV and Lease do, so the
// library's retries are part of what is tested. Every operation is recorded
// with the time it was sent and the time its answer (or error) arrived, on
// this process's monotonic clock.

// recorder keeps what the clients saw.
type recorder struct {
	start      time.Time
	mu         sync.Mutex
	history    []linearizability.Operation
	watches    []*linearizability.WatchHistory
	keepAlives []linearizability.KeepAlive
	maxRev     atomic.Int64 // the highest header revision any client saw
}

func newRecorder() *recorder { return &recorder{start: time.Now()} }

// now is the time since the run started, in nanoseconds.
func (r *recorder) now() int64 { return int64(time.Since(r.start)) }

func (r *recorder) saw(rev int64) {
	for {
		cur := r.maxRev.Load()
		if rev <= cur || r.maxRev.CompareAndSwap(cur, rev) {
			return
		}
	}
}

func (r *recorder) add(op linearizability.Operation) {
	r.mu.Lock()
	r.history = append(r.history, op)
	r.mu.Unlock()
}

func (r *recorder) addKeepAlive(ka linearizability.KeepAlive) {
	r.mu.Lock()
	r.keepAlives = append(r.keepAlives, ka)
	r.mu.Unlock()
}

func (r *recorder) newWatch(w *linearizability.WatchHistory) {
	r.mu.Lock()
	r.watches = append(r.watches, w)
	r.mu.Unlock()
}

const (
	// opTimeout bounds one operation; past it the outcome is unknown.
	opTimeout = 3 * time.Second
	// keyPrefix and keyEnd bound the keys the workload touches.
	keyPrefix = "k/"
	keyEnd    = "k0"
	// watchLifeMax bounds how long one watch lives before the watcher
	// starts another from a past revision.
	watchLifeMax = 8 * time.Second
)

// worker is one sequential client.
type worker struct {
	id     int
	rng    *rand.Rand
	cli    *clientv3.Client
	kv     pb.KVClient
	lease  pb.LeaseClient
	rec    *recorder
	keys   int
	seq    int
	leases []heldLease // leases this client was granted, oldest first
	// retryTxns makes the client retry a txn that timed out, as an
	// application would: the second attempt is the same request.
	retryTxns bool
	retried   *atomic.Int64 // txns retried after an unknown outcome
}

// newClient is a client of endpoints that reconnects to a restarted member
// within a second (gRPC's default backoff grows to two minutes, which
// would leave a client pinned to a member that was killed twice idle for
// the rest of the run).
// heldLease is a lease a client was granted. The client keeps using it
// (puts onto it, keepalives) well past its TTL if it stops renewing it, so
// that writes onto expired leases are part of the workload.
type heldLease struct {
	id      int64
	granted time.Time
	ttl     time.Duration
	renew   bool // the client sends keepalives for it; if not, it expires
}

const (
	// leasesHeldMax bounds the leases one client holds.
	leasesHeldMax = 6
	// leaseHeldPastTTL is how long past its TTL a client holds a lease
	// before a new grant may replace it: an unrenewed lease has expired by
	// then, and the client's puts onto it must fail. A renewed one expires
	// TTL after its last keepalive, once the client has let it go.
	leaseHeldPastTTL = time.Second
)

// mayGrant reports whether the client takes a new lease now.
func (w *worker) mayGrant() bool {
	return len(w.leases) < leasesHeldMax || time.Since(w.leases[0].granted) > w.leases[0].ttl+leaseHeldPastTTL
}

func (w *worker) anyLease() int64 { return w.leases[w.rng.IntN(len(w.leases))].id }

func newClient(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		})},
	})
}

func (w *worker) key() []byte {
	return fmt.Appendf(nil, "%s%02d", keyPrefix, w.rng.IntN(w.keys))
}

func (w *worker) value() []byte {
	w.seq++
	return fmt.Appendf(nil, "c%d-%d", w.id, w.seq)
}

// pastRevision picks a revision at or below the newest one seen.
func (w *worker) pastRevision(back int) int64 {
	return max(1, w.rec.maxRev.Load()-int64(w.rng.IntN(back+1)))
}

// run issues operations until ctx is done.
func (w *worker) run(ctx context.Context) {
	for ctx.Err() == nil {
		w.step(ctx)
	}
}

func (w *worker) step(ctx context.Context) {
	roll := w.rng.IntN(100)
	switch {
	case roll < 22:
		w.do(ctx, linearizability.Request{Put: w.putRequest()})
	case roll < 38:
		w.do(ctx, linearizability.Request{Range: w.rangeRequest(false)})
	case roll < 46:
		w.do(ctx, linearizability.Request{Range: w.rangeRequest(true)})
	case roll < 53:
		d := &pb.DeleteRangeRequest{Key: w.key(), PrevKv: w.rng.IntN(2) == 0}
		if w.rng.IntN(4) == 0 {
			d.RangeEnd = append(append([]byte(nil), d.Key...), 0xff)
		}
		w.do(ctx, linearizability.Request{DeleteRange: d})
	case roll < 70:
		w.txn(ctx)
	case roll < 74:
		w.do(ctx, linearizability.Request{Txn: &pb.TxnRequest{
			Compare: []*pb.Compare{w.compare()},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: w.rangeRequest(false)}}},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: w.key()}}}},
		}})
	case roll < 75:
		w.do(ctx, linearizability.Request{Compact: &pb.CompactionRequest{Revision: w.pastRevision(40), Physical: w.rng.IntN(2) == 0}})
	case roll < 81:
		if w.mayGrant() {
			w.grant(ctx)
		} else {
			w.do(ctx, linearizability.Request{Put: w.putRequest()})
		}
	case roll < 89:
		w.keepAlive(ctx)
	case roll < 91:
		if len(w.leases) > 0 {
			i := w.rng.IntN(len(w.leases))
			id := w.leases[i].id
			if w.rng.IntN(2) == 0 {
				w.leases = append(w.leases[:i], w.leases[i+1:]...)
			} else {
				// Kept, unrenewed: the client's later puts onto the revoked
				// lease must fail.
				w.leases[i].renew = false
			}
			w.do(ctx, linearizability.Request{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}})
		}
	default:
		// A put onto a lease: its key goes when the lease does.
		p := w.putRequest()
		if len(w.leases) > 0 {
			p.Lease = w.anyLease()
		}
		w.do(ctx, linearizability.Request{Put: p})
	}
}

func (w *worker) putRequest() *pb.PutRequest {
	return &pb.PutRequest{Key: w.key(), Value: w.value(), PrevKv: w.rng.IntN(3) == 0}
}

func (w *worker) rangeRequest(serializable bool) *pb.RangeRequest {
	r := &pb.RangeRequest{Key: w.key(), Serializable: serializable}
	switch w.rng.IntN(6) {
	case 0:
		r.Key, r.RangeEnd = []byte(keyPrefix), []byte(keyEnd)
	case 1:
		r.Key, r.RangeEnd = []byte(keyPrefix), []byte(keyEnd)
		r.Limit = 1 + w.rng.Int64N(3)
	case 2:
		r.Revision = w.pastRevision(20)
	case 3:
		r.Key, r.RangeEnd = []byte(keyPrefix), []byte(keyEnd)
		r.CountOnly = true
	}
	return r
}

func (w *worker) compare() *pb.Compare {
	c := &pb.Compare{Key: w.key()}
	switch w.rng.IntN(3) {
	case 0:
		c.Target, c.Result = pb.Compare_VERSION, pb.Compare_EQUAL
		c.TargetUnion = &pb.Compare_Version{Version: w.rng.Int64N(3)}
	case 1:
		c.Target, c.Result = pb.Compare_MOD, pb.Compare_LESS
		c.TargetUnion = &pb.Compare_ModRevision{ModRevision: w.pastRevision(10)}
	default:
		c.Target, c.Result = pb.Compare_VALUE, pb.Compare_NOT_EQUAL
		c.TargetUnion = &pb.Compare_Value{Value: []byte(fmt.Sprintf("c%d-%d", w.rng.IntN(8), w.rng.IntN(w.seq+1)))}
	}
	return c
}

// txn sends a txn with a compare; its success branch writes a value no
// other request carries, so it is unique in the log.
func (w *worker) txn(ctx context.Context) {
	t := &pb.TxnRequest{
		Compare: []*pb.Compare{w.compare()},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: w.putRequest()}}},
		Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: w.key()}}}},
	}
	if w.rng.IntN(3) == 0 {
		t.Failure = []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: w.key()}}}}
	}
	resp := w.do(ctx, linearizability.Request{Txn: t})
	if w.retryTxns && resp.Err != nil && ctx.Err() == nil {
		// The application's retry of a txn whose outcome it does not know:
		// the same request again.
		w.retried.Add(1)
		w.do(ctx, linearizability.Request{Txn: t})
	}
}

func (w *worker) grant(ctx context.Context) {
	if len(w.leases) >= leasesHeldMax {
		w.leases = w.leases[1:]
	}
	g := &pb.LeaseGrantRequest{TTL: 2 + w.rng.Int64N(3)}
	if w.rng.IntN(2) == 0 {
		// A client-chosen ID, unique to this client.
		w.seq++
		g.ID = int64(w.id+1)<<40 | int64(w.seq)
	}
	resp := w.do(ctx, linearizability.Request{LeaseGrant: g})
	if resp.Err == nil && resp.LeaseGrant != nil {
		w.leases = append(w.leases, heldLease{id: resp.LeaseGrant.ID, granted: time.Now(),
			ttl: time.Duration(resp.LeaseGrant.TTL) * time.Second, renew: w.rng.IntN(2) == 0})
	}
}

// keepAlive renews one of the client's leases once. An answer with a TTL is
// a promise the lease-expiry-time checker holds the cluster to.
func (w *worker) keepAlive(ctx context.Context) {
	var renewed []int64
	for _, l := range w.leases {
		if l.renew {
			renewed = append(renewed, l.id)
		}
	}
	if len(renewed) == 0 {
		return
	}
	id := renewed[w.rng.IntN(len(renewed))]
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	sent := w.rec.now()
	resp, err := w.cli.KeepAliveOnce(octx, clientv3.LeaseID(id))
	ret := w.rec.now()
	if err != nil || resp.TTL <= 0 {
		return
	}
	w.rec.saw(resp.ResponseHeader.GetRevision())
	w.rec.addKeepAlive(linearizability.KeepAlive{Client: w.id, Lease: id, Sent: sent, Return: ret, TTLSeconds: resp.TTL})
}

// do sends one request and records it with what came back.
func (w *worker) do(ctx context.Context, q linearizability.Request) linearizability.Response {
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	op := linearizability.Operation{Client: w.id, Request: q, Call: w.rec.now()}
	var r linearizability.Response
	var h *pb.ResponseHeader
	var err error
	switch {
	case q.Put != nil:
		r.Put, err = w.kv.Put(octx, q.Put)
		h = r.Put.GetHeader()
	case q.Range != nil:
		r.Range, err = w.kv.Range(octx, q.Range)
		h = r.Range.GetHeader()
	case q.DeleteRange != nil:
		r.DeleteRange, err = w.kv.DeleteRange(octx, q.DeleteRange)
		h = r.DeleteRange.GetHeader()
	case q.Txn != nil:
		r.Txn, err = w.kv.Txn(octx, q.Txn)
		h = r.Txn.GetHeader()
	case q.Compact != nil:
		r.Compact, err = w.kv.Compact(octx, q.Compact)
		h = r.Compact.GetHeader()
	case q.LeaseGrant != nil:
		r.LeaseGrant, err = w.lease.LeaseGrant(octx, q.LeaseGrant)
		h = r.LeaseGrant.GetHeader()
	case q.LeaseRevoke != nil:
		r.LeaseRevoke, err = w.lease.LeaseRevoke(octx, q.LeaseRevoke)
		h = r.LeaseRevoke.GetHeader()
	}
	op.Return = w.rec.now()
	if err != nil {
		r = linearizability.Response{Err: err}
	} else {
		w.rec.saw(h.GetRevision())
	}
	op.Response = r
	w.rec.add(op)
	return r
}

// watcher keeps watching the workload's keys, each watch from a past
// revision, recording every response.
type watcher struct {
	id  int // the client number the checker names it by
	rng *rand.Rand
	cli *clientv3.Client
	rec *recorder
	n   int
}

func (w *watcher) run(ctx context.Context) {
	for ctx.Err() == nil {
		w.watchOnce(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(w.rng.IntN(300)) * time.Millisecond):
		}
	}
}

func (w *watcher) watchOnce(ctx context.Context) {
	w.n++
	// Each watch gets its own gRPC stream (clientv3 shares one among
	// watches with the same metadata), so a progress request reaches only
	// it.
	wctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "nodechaos-watch", fmt.Sprint(w.id, "-", w.n)),
		time.Duration(1+w.rng.Int64N(int64(watchLifeMax))))
	defer cancel()
	create := &pb.WatchCreateRequest{Key: []byte(keyPrefix), RangeEnd: []byte(keyEnd), StartRevision: max(1, w.rec.maxRev.Load()-int64(w.rng.IntN(30)))}
	opts := []clientv3.OpOption{clientv3.WithRange(keyEnd), clientv3.WithRev(create.StartRevision), clientv3.WithCreatedNotify()}
	if w.rng.IntN(2) == 0 {
		create.PrevKv = true
		opts = append(opts, clientv3.WithPrevKV())
	}
	switch w.rng.IntN(8) {
	case 0:
		create.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}
		opts = append(opts, clientv3.WithFilterPut())
	case 1:
		create.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}
		opts = append(opts, clientv3.WithFilterDelete())
	}
	h := &linearizability.WatchHistory{Client: w.id, Create: create}
	w.rec.newWatch(h)
	ch := w.cli.Watch(wctx, keyPrefix, opts...)
	progress := time.NewTicker(time.Duration(500+w.rng.IntN(1500)) * time.Millisecond)
	defer progress.Stop()
	for {
		select {
		case wr, ok := <-ch:
			if !ok {
				return
			}
			resp := &pb.WatchResponse{
				Header:          proto.CloneOf(wr.Header),
				Created:         wr.Created,
				Canceled:        wr.Canceled,
				CompactRevision: wr.CompactRevision,
				Events:          wr.Events,
			}
			h.Responses = append(h.Responses, linearizability.WatchReceived{Time: w.rec.now(), Resp: resp})
			if wr.Canceled {
				return
			}
		case <-progress.C:
			if w.rng.IntN(2) == 0 {
				h.RequestedProgressAt = append(h.RequestedProgressAt, w.rec.now())
				_ = w.cli.RequestProgress(wctx)
			}
		}
	}
}

// retryClients are the client library's retrying KV and Lease clients, the
// ones clientv3's own KV and Lease call through.
func retryClients(cli *clientv3.Client) (pb.KVClient, pb.LeaseClient) {
	return clientv3.RetryKVClient(cli), clientv3.RetryLeaseClient(cli)
}

package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// Bounds of the watch proxy.
const (
	// watchSendQueueMax bounds replies waiting for one client stream; a
	// watcher whose stream is that far behind is cancelled (the client
	// watches again from its last revision), so one slow reader cannot
	// stall the others on its upstream watch.
	watchSendQueueMax = 1024
	// watchersPerStreamMax bounds the watchers of one client stream.
	watchersPerStreamMax = 1 << 14
)

// watchProxy serves Watch. Watchers that watch the same range with the
// same options from now share one upstream watch (a group); a watcher
// from a past revision has an upstream watch of its own.
type watchProxy struct {
	pb.UnimplementedWatchServer
	ctx context.Context
	cli *clientv3.Client
	ns  namespace
	lg  *zap.Logger

	mu     sync.Mutex
	groups map[string]*watchGroup
}

func newWatchProxy(ctx context.Context, cli *clientv3.Client, ns namespace, lg *zap.Logger) *watchProxy {
	return &watchProxy{ctx: ctx, cli: cli, ns: ns, lg: lg, groups: map[string]*watchGroup{}}
}

// watchGroup is one upstream watch and the client watchers it feeds.
type watchGroup struct {
	key     string // in groups; "" for a watcher's own
	cancel  context.CancelFunc
	mu      sync.Mutex
	subs    map[*proxyWatcher]struct{}
	lastRev int64 // the revision its replies have reached
	started chan struct{}
	done    bool
}

type proxyWatcher struct {
	id     int64
	stream *proxyWatchStream
	group  *watchGroup
}

type proxyWatchStream struct {
	out      chan *pb.WatchResponse
	mu       sync.Mutex
	watchers map[int64]*proxyWatcher
	nextID   int64
	closed   bool
}

// send queues a reply; false when the stream is too far behind.
func (s *proxyWatchStream) send(r *pb.WatchResponse) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return true
	}
	select {
	case s.out <- r:
		return true
	default:
		return false
	}
}

func groupKey(cr *pb.WatchCreateRequest) string {
	return fmt.Sprintf("%q|%q|%t|%t|%v", cr.GetKey(), cr.GetRangeEnd(), cr.GetPrevKv(), cr.GetProgressNotify(), cr.GetFilters())
}

func (w *watchProxy) Watch(stream pb.Watch_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	ws := &proxyWatchStream{out: make(chan *pb.WatchResponse, watchSendQueueMax), watchers: map[int64]*proxyWatcher{}}
	sendErr := make(chan error, 1)
	go func() {
		for {
			select {
			case r := <-ws.out:
				if err := stream.Send(r); err != nil {
					sendErr <- err
					cancel()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		ws.mu.Lock()
		ws.closed = true
		watchers := make([]*proxyWatcher, 0, len(ws.watchers))
		for _, pw := range ws.watchers {
			watchers = append(watchers, pw)
		}
		ws.mu.Unlock()
		for _, pw := range watchers {
			w.leave(pw)
		}
	}()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			select {
			case serr := <-sendErr:
				return serr
			default:
			}
			return err
		}
		switch {
		case req.GetCreateRequest() != nil:
			w.create(ctx, ws, req.GetCreateRequest())
		case req.GetCancelRequest() != nil:
			id := req.GetCancelRequest().GetWatchId()
			ws.mu.Lock()
			pw := ws.watchers[id]
			delete(ws.watchers, id)
			ws.mu.Unlock()
			if pw != nil {
				w.leave(pw)
				ws.send(&pb.WatchResponse{Header: &pb.ResponseHeader{}, WatchId: id, Canceled: true})
			}
		case req.GetProgressRequest() != nil:
			// The revision every watcher of the stream has reached: a
			// progress reply must not claim more than any of them got.
			ws.mu.Lock()
			rev := int64(-1)
			for _, pw := range ws.watchers {
				pw.group.mu.Lock()
				if rev < 0 || pw.group.lastRev < rev {
					rev = pw.group.lastRev
				}
				pw.group.mu.Unlock()
			}
			ws.mu.Unlock()
			if rev >= 0 {
				ws.send(&pb.WatchResponse{Header: &pb.ResponseHeader{Revision: rev}, WatchId: -1})
			}
		}
	}
}

func (w *watchProxy) create(ctx context.Context, ws *proxyWatchStream, cr *pb.WatchCreateRequest) {
	ws.mu.Lock()
	id := cr.GetWatchId()
	switch {
	case len(ws.watchers) >= watchersPerStreamMax:
		ws.mu.Unlock()
		ws.send(&pb.WatchResponse{Header: &pb.ResponseHeader{}, WatchId: -1, Created: true, Canceled: true,
			CancelReason: fmt.Sprintf("grpc-proxy: a watch stream holds at most %d watchers", watchersPerStreamMax)})
		return
	case id != 0 && ws.watchers[id] != nil:
		ws.mu.Unlock()
		ws.send(&pb.WatchResponse{Header: &pb.ResponseHeader{}, WatchId: -1, Created: true, Canceled: true,
			CancelReason: "mvcc: duplicate watch ID provided on the WatchStream"})
		return
	case id == 0:
		for ws.watchers[ws.nextID] != nil {
			ws.nextID++
		}
		id = ws.nextID
		ws.nextID++
	}
	pw := &proxyWatcher{id: id, stream: ws}
	ws.watchers[id] = pw
	ws.mu.Unlock()

	shared := cr.GetStartRevision() == 0 && !cr.GetFragment()
	var g *watchGroup
	if shared {
		w.mu.Lock()
		g = w.groups[groupKey(cr)]
		if g == nil {
			g = w.startGroup(groupKey(cr), cr)
			w.groups[g.key] = g
		}
		g.mu.Lock()
		g.subs[pw] = struct{}{}
		g.mu.Unlock()
		w.mu.Unlock()
	} else {
		g = w.startGroup("", cr)
		g.mu.Lock()
		g.subs[pw] = struct{}{}
		g.mu.Unlock()
	}
	pw.group = g
	// The created reply carries the revision the group has reached: the
	// watcher sees every event after it.
	select {
	case <-g.started:
	case <-ctx.Done():
		return
	}
	g.mu.Lock()
	rev := g.lastRev
	g.mu.Unlock()
	ws.send(&pb.WatchResponse{Header: &pb.ResponseHeader{Revision: rev}, WatchId: id, Created: true})
}

// startGroup opens an upstream watch for cr.
func (w *watchProxy) startGroup(key string, cr *pb.WatchCreateRequest) *watchGroup {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(w.ctx))
	g := &watchGroup{key: key, cancel: cancel, subs: map[*proxyWatcher]struct{}{}, started: make(chan struct{})}
	opts := []clientv3.OpOption{clientv3.WithCreatedNotify()}
	if end := w.ns.end(cr.GetRangeEnd()); len(end) > 0 {
		opts = append(opts, clientv3.WithRange(string(end)))
	}
	if cr.GetStartRevision() != 0 {
		opts = append(opts, clientv3.WithRev(cr.GetStartRevision()))
	}
	if cr.GetPrevKv() {
		opts = append(opts, clientv3.WithPrevKV())
	}
	if cr.GetProgressNotify() {
		opts = append(opts, clientv3.WithProgressNotify())
	}
	if cr.GetFragment() {
		opts = append(opts, clientv3.WithFragment())
	}
	for _, f := range cr.GetFilters() {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			opts = append(opts, clientv3.WithFilterPut())
		case pb.WatchCreateRequest_NODELETE:
			opts = append(opts, clientv3.WithFilterDelete())
		}
	}
	wch := w.cli.Watch(ctx, string(w.ns.key(cr.GetKey())), opts...)
	go w.runGroup(g, wch)
	return g
}

func (w *watchProxy) runGroup(g *watchGroup, wch clientv3.WatchChan) {
	startedOnce := sync.Once{}
	started := func() { startedOnce.Do(func() { close(g.started) }) }
	defer started()
	for resp := range wch {
		r := &pb.WatchResponse{Header: resp.Header, Events: resp.Events, CompactRevision: resp.CompactRevision,
			Canceled: resp.Canceled, CancelReason: resp.CancelReason}
		if r.Header == nil {
			r.Header = &pb.ResponseHeader{}
		}
		w.ns.watchResp(r)
		g.mu.Lock()
		if rev := r.GetHeader().GetRevision(); rev > g.lastRev {
			g.lastRev = rev
		}
		if resp.Created {
			g.mu.Unlock()
			started()
			continue
		}
		started()
		subs := make([]*proxyWatcher, 0, len(g.subs))
		for pw := range g.subs {
			subs = append(subs, pw)
		}
		g.mu.Unlock()
		for _, pw := range subs {
			out := proto.Clone(r).(*pb.WatchResponse)
			out.WatchId = pw.id
			if !pw.stream.send(out) {
				w.lg.Warn("grpc-proxy: a watcher's stream is too far behind; cancelling it", zap.Int64("watch-id", pw.id))
				w.leave(pw)
				pw.stream.mu.Lock()
				delete(pw.stream.watchers, pw.id)
				pw.stream.mu.Unlock()
				go func(ws *proxyWatchStream, id int64, rev int64) {
					// Queued once there is room, so the client hears of it.
					for i := 0; i < 100; i++ {
						if ws.send(&pb.WatchResponse{Header: &pb.ResponseHeader{Revision: rev}, WatchId: id, Canceled: true,
							CancelReason: "grpc-proxy: watcher too slow; watch again from the last revision received"}) {
							return
						}
						time.Sleep(100 * time.Millisecond)
					}
				}(pw.stream, pw.id, r.GetHeader().GetRevision())
			}
		}
		if resp.Canceled || resp.CompactRevision != 0 {
			break
		}
	}
	// The upstream watch ended (compaction, cancellation, or the proxy
	// stopping): its watchers end with it.
	w.mu.Lock()
	if g.key != "" && w.groups[g.key] == g {
		delete(w.groups, g.key)
	}
	w.mu.Unlock()
	g.mu.Lock()
	g.done = true
	subs := make([]*proxyWatcher, 0, len(g.subs))
	for pw := range g.subs {
		subs = append(subs, pw)
	}
	g.subs = map[*proxyWatcher]struct{}{}
	g.mu.Unlock()
	for _, pw := range subs {
		pw.stream.mu.Lock()
		delete(pw.stream.watchers, pw.id)
		pw.stream.mu.Unlock()
		pw.stream.send(&pb.WatchResponse{Header: &pb.ResponseHeader{Revision: g.lastRev}, WatchId: pw.id, Canceled: true,
			CancelReason: "grpc-proxy: the upstream watch ended"})
	}
	g.cancel()
}

// leave takes a watcher off its group; the group's upstream watch ends
// with its last watcher.
func (w *watchProxy) leave(pw *proxyWatcher) {
	g := pw.group
	if g == nil {
		return
	}
	w.mu.Lock()
	g.mu.Lock()
	delete(g.subs, pw)
	empty := len(g.subs) == 0
	if empty && g.key != "" && w.groups[g.key] == g {
		delete(w.groups, g.key)
	}
	g.mu.Unlock()
	w.mu.Unlock()
	if empty {
		g.cancel()
	}
}

// UpstreamWatches counts the upstream watches shared by watchers from now.
func (p *GRPCProxy) UpstreamWatches() int { return p.watch.upstreamWatches() }

func (w *watchProxy) upstreamWatches() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.groups)
}

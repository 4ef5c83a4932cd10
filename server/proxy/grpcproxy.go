package proxy

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// GRPCProxyConfig configures `noded grpc-proxy start`: etcd's stateless
// L7 proxy. Serializable ranges are answered from a cache of recent
// ranges (every range's answer is cached; a write through the proxy
// drops the entries it overlaps), watchers of the same range from now
// share one upstream watch, and keepalives of one lease from many clients
// are sent upstream once.
type GRPCProxyConfig struct {
	Listener  net.Listener
	Endpoints []string
	Namespace string // --namespace: every key is under it
	// DialTimeout, KeepAliveTime and KeepAliveTimeout are the upstream
	// client's (defaults 5s, 0, 0 as etcd's grpc-proxy).
	DialTimeout      time.Duration
	KeepAliveTime    time.Duration
	KeepAliveTimeout time.Duration
	Logger           *zap.Logger
}

// GRPCProxy is a running grpc-proxy.
type GRPCProxy struct {
	cli    *clientv3.Client
	srv    *grpc.Server
	httpS  *http.Server
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	l      net.Listener
	kv     *kvProxy
	watch  *watchProxy
}

// rangeCacheMax is the number of range answers the cache keeps (etcd's).
const rangeCacheMax = 2048

// StartGRPCProxy connects to the cluster and serves on cfg.Listener.
func StartGRPCProxy(cfg GRPCProxyConfig) (*GRPCProxy, error) {
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout,
		DialKeepAliveTime: cfg.KeepAliveTime, DialKeepAliveTimeout: cfg.KeepAliveTimeout, Logger: lg.Named("client")})
	if err != nil {
		return nil, fmt.Errorf("grpc-proxy: client for %v: %w", cfg.Endpoints, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	conn := cli.ActiveConnection()
	ns := namespace(cfg.Namespace)
	p := &GRPCProxy{cli: cli, ctx: ctx, cancel: cancel, l: cfg.Listener,
		srv: grpc.NewServer(grpc.MaxRecvMsgSize(math32), grpc.MaxSendMsgSize(math32))}
	p.kv = &kvProxy{kv: pb.NewKVClient(conn), ns: ns, cache: newRangeCache(rangeCacheMax)}
	p.watch = newWatchProxy(ctx, cli, ns, lg)
	pb.RegisterKVServer(p.srv, p.kv)
	pb.RegisterWatchServer(p.srv, p.watch)
	pb.RegisterLeaseServer(p.srv, newLeaseProxy(ctx, pb.NewLeaseClient(conn), ns, lg))
	pb.RegisterClusterServer(p.srv, &clusterProxy{c: pb.NewClusterClient(conn)})
	pb.RegisterMaintenanceServer(p.srv, &maintenanceProxy{m: pb.NewMaintenanceClient(conn)})
	pb.RegisterAuthServer(p.srv, &authProxy{a: pb.NewAuthClient(conn)})

	grpcConns := &connListener{conns: make(chan net.Conn), done: ctx.Done(), addr: cfg.Listener.Addr()}
	httpConns := &connListener{conns: make(chan net.Conn), done: ctx.Done(), addr: cfg.Listener.Addr()}
	mux := http.NewServeMux()
	health := func(w http.ResponseWriter, r *http.Request) {
		hctx, hcancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer hcancel()
		_, err := pb.NewKVClient(conn).Range(hctx, &pb.RangeRequest{Key: []byte("health")})
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, `{"health":"false","reason":%q}`, err.Error())
			return
		}
		fmt.Fprint(w, `{"health":"true","reason":""}`)
	}
	mux.HandleFunc("/health", health)
	mux.HandleFunc("/proxy/health", health)
	p.httpS = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(lg)}
	p.wg.Add(3)
	go func() { defer p.wg.Done(); p.srv.Serve(grpcConns) }()
	go func() { defer p.wg.Done(); p.httpS.Serve(httpConns) }()
	go func() {
		defer p.wg.Done()
		for {
			c, err := cfg.Listener.Accept()
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
					return
				}
				time.Sleep(50 * time.Millisecond)
				continue
			}
			go sniffTo(ctx, c, grpcConns, httpConns)
		}
	}()
	lg.Info("grpc-proxy started", zap.String("listen-addr", cfg.Listener.Addr().String()), zap.Strings("endpoints", cfg.Endpoints),
		zap.String("namespace", cfg.Namespace))
	return p, nil
}

const math32 = 1<<31 - 1

// sniffTo hands an HTTP/2 connection to grpcConns and others to httpConns.
func sniffTo(ctx context.Context, c net.Conn, grpcConns, httpConns *connListener) {
	c.SetReadDeadline(time.Now().Add(sniffTimeout))
	head := make([]byte, len(http2Preface))
	n, err := io.ReadFull(c, head)
	c.SetReadDeadline(time.Time{})
	conn := &peekedConn{Conn: c, head: head[:n]}
	target := httpConns
	if err == nil && bytes.Equal(head, http2Preface) {
		target = grpcConns
	} else if n == 0 {
		c.Close()
		return
	}
	select {
	case target.conns <- conn:
	case <-ctx.Done():
		c.Close()
	}
}

// Stop closes the listener, the clients' streams and the upstream client.
func (p *GRPCProxy) Stop() {
	p.cancel()
	p.l.Close()
	p.srv.Stop()
	p.httpS.Close()
	p.wg.Wait()
	p.cli.Close()
}

// forward carries a client's credentials (token) to the upstream call.
func forward(ctx context.Context) context.Context {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	out := metadata.MD{}
	for _, k := range []string{"token", "authorization"} {
		if v := md.Get(k); len(v) > 0 {
			out.Set(k, v...)
		}
	}
	return metadata.NewOutgoingContext(ctx, out)
}

type kvProxy struct {
	pb.UnimplementedKVServer
	kv    pb.KVClient
	ns    namespace
	cache *rangeCache
}

func (p *kvProxy) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if r.GetSerializable() {
		if resp := p.cache.get(r); resp != nil {
			return resp, nil
		}
	}
	resp, err := p.kv.Range(forward(ctx), p.ns.rangeReq(r))
	if err != nil {
		return nil, err
	}
	p.ns.rangeResp(resp)
	p.cache.add(r, resp)
	return resp, nil
}

func (p *kvProxy) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	p.cache.invalidate(r.GetKey(), nil)
	resp, err := p.kv.Put(forward(ctx), p.ns.putReq(r))
	// Again after the write: a range that read the old value meanwhile
	// may have cached it.
	p.cache.invalidate(r.GetKey(), nil)
	if err == nil {
		p.ns.strip(resp.GetPrevKv())
	}
	return resp, err
}

func (p *kvProxy) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	p.cache.invalidate(r.GetKey(), r.GetRangeEnd())
	resp, err := p.kv.DeleteRange(forward(ctx), p.ns.deleteReq(r))
	p.cache.invalidate(r.GetKey(), r.GetRangeEnd())
	if err == nil {
		p.ns.deleteResp(resp)
	}
	return resp, err
}

func (p *kvProxy) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	p.invalidateTxn(r)
	resp, err := p.kv.Txn(forward(ctx), p.ns.txnReq(r))
	p.invalidateTxn(r)
	if err == nil {
		p.ns.txnResp(resp)
	}
	return resp, err
}

func (p *kvProxy) invalidateTxn(r *pb.TxnRequest) {
	for _, ops := range [][]*pb.RequestOp{r.GetSuccess(), r.GetFailure()} {
		for _, op := range ops {
			switch {
			case op.GetRequestPut() != nil:
				p.cache.invalidate(op.GetRequestPut().GetKey(), nil)
			case op.GetRequestDeleteRange() != nil:
				p.cache.invalidate(op.GetRequestDeleteRange().GetKey(), op.GetRequestDeleteRange().GetRangeEnd())
			case op.GetRequestTxn() != nil:
				p.invalidateTxn(op.GetRequestTxn())
			}
		}
	}
}

func (p *kvProxy) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	p.cache.clear()
	return p.kv.Compact(forward(ctx), r)
}

// rangeCache keeps the answers to recent ranges, least recently used
// out first, with each entry's key range so that a write can drop what
// it overlaps.
type rangeCache struct {
	max   int
	mu    sync.Mutex
	lru   *list.List // of *cacheEntry, most recent first
	byReq map[string]*list.Element
}

type cacheEntry struct {
	req      string
	key, end []byte
	resp     *pb.RangeResponse
}

func newRangeCache(max int) *rangeCache {
	return &rangeCache{max: max, lru: list.New(), byReq: map[string]*list.Element{}}
}

// cacheKey is a range's identity, whether it was serializable or not.
func cacheKey(r *pb.RangeRequest) string {
	c := proto.Clone(r).(*pb.RangeRequest)
	c.Serializable = false
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	return string(b)
}

func (c *rangeCache) get(r *pb.RangeRequest) *pb.RangeResponse {
	k := cacheKey(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byReq[k]
	if !ok {
		return nil
	}
	c.lru.MoveToFront(e)
	return proto.Clone(e.Value.(*cacheEntry).resp).(*pb.RangeResponse)
}

func (c *rangeCache) add(r *pb.RangeRequest, resp *pb.RangeResponse) {
	k := cacheKey(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byReq[k]; ok {
		c.lru.Remove(e)
	}
	c.byReq[k] = c.lru.PushFront(&cacheEntry{req: k, key: r.GetKey(), end: r.GetRangeEnd(), resp: proto.Clone(resp).(*pb.RangeResponse)})
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.byReq, old.Value.(*cacheEntry).req)
	}
}

// overlaps reports whether [k1,e1) and [k2,e2) share a key; an empty end
// is the single key, "\x00" every key from the start on.
func overlaps(k1, e1, k2, e2 []byte) bool {
	hi := func(k, e []byte) []byte {
		switch {
		case len(e) == 0:
			return append(bytes.Clone(k), 0)
		case len(e) == 1 && e[0] == 0:
			return nil // no upper bound
		}
		return e
	}
	h1, h2 := hi(k1, e1), hi(k2, e2)
	below := func(k, h []byte) bool { return h == nil || bytes.Compare(k, h) < 0 }
	return below(k1, h2) && below(k2, h1)
}

func (c *rangeCache) invalidate(key, end []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.lru.Front(); e != nil; {
		next := e.Next()
		ce := e.Value.(*cacheEntry)
		if overlaps(ce.key, ce.end, key, end) {
			c.lru.Remove(e)
			delete(c.byReq, ce.req)
		}
		e = next
	}
}

func (c *rangeCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Init()
	clear(c.byReq)
}

// The services the proxy forwards as they are.

type clusterProxy struct {
	pb.UnimplementedClusterServer
	c pb.ClusterClient
}

func (p *clusterProxy) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	return p.c.MemberAdd(forward(ctx), r)
}
func (p *clusterProxy) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	return p.c.MemberRemove(forward(ctx), r)
}
func (p *clusterProxy) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	return p.c.MemberUpdate(forward(ctx), r)
}
func (p *clusterProxy) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	return p.c.MemberList(forward(ctx), r)
}
func (p *clusterProxy) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	return p.c.MemberPromote(forward(ctx), r)
}

type maintenanceProxy struct {
	pb.UnimplementedMaintenanceServer
	m pb.MaintenanceClient
}

func (p *maintenanceProxy) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	return p.m.Alarm(forward(ctx), r)
}
func (p *maintenanceProxy) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	return p.m.Status(forward(ctx), r)
}
func (p *maintenanceProxy) Defragment(ctx context.Context, r *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	return p.m.Defragment(forward(ctx), r)
}
func (p *maintenanceProxy) Hash(ctx context.Context, r *pb.HashRequest) (*pb.HashResponse, error) {
	return p.m.Hash(forward(ctx), r)
}
func (p *maintenanceProxy) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	return p.m.HashKV(forward(ctx), r)
}
func (p *maintenanceProxy) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	return p.m.MoveLeader(forward(ctx), r)
}
func (p *maintenanceProxy) Snapshot(r *pb.SnapshotRequest, stream pb.Maintenance_SnapshotServer) error {
	up, err := p.m.Snapshot(forward(stream.Context()), r)
	if err != nil {
		return err
	}
	for {
		resp, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

type authProxy struct {
	pb.UnimplementedAuthServer
	a pb.AuthClient
}

func (p *authProxy) AuthStatus(ctx context.Context, r *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	return p.a.AuthStatus(forward(ctx), r)
}
func (p *authProxy) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	return p.a.Authenticate(forward(ctx), r)
}

package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	stdnet "net"
	"net/http"
	"net/url"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/test/bufconn"

	"github.com/noded/noded/server/coordination"
)

// One port serves gRPC and HTTP, as etcd's does: each accepted connection
// is sniffed. A connection that opens with the HTTP/2 preface goes to the
// gRPC server, anything else to the HTTP server (HTTP/1.1: /health,
// /metrics, the /v3 JSON gateway). The peer port is split the same way:
// the transport's own preamble goes to the transport, HTTP to the small
// peer API a joining member reads the cluster from.
const (
	// sniffsMax bounds connections being sniffed at once; a connection
	// beyond it is closed.
	sniffsMax = 1024
	// sniffTimeout bounds the wait for a connection's first bytes.
	sniffTimeout = 10 * time.Second
	// acceptedQueueMax bounds sniffed connections waiting for their server
	// to accept them.
	acceptedQueueMax = 128
	// gatewayBufferBytes sizes the in-memory connection from the JSON
	// gateway to the gRPC server.
	gatewayBufferBytes = 1 << 20
)

var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// chanListener is a net.Listener fed with connections by a sniffer.
type chanListener struct {
	addr   stdnet.Addr
	conns  chan stdnet.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr stdnet.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan stdnet.Conn, acceptedQueueMax), closed: make(chan struct{})}
}

func (l *chanListener) Accept() (stdnet.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, stdnet.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() stdnet.Addr { return l.addr }

// hand gives conn to the listener's server, or closes it if the listener
// is closed.
func (l *chanListener) hand(conn stdnet.Conn) {
	select {
	case l.conns <- conn:
	case <-l.closed:
		conn.Close()
	}
}

// prefixConn replays the bytes a sniffer read before the rest of the conn.
type prefixConn struct {
	stdnet.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// sniffer accepts on a raw listener and routes each connection by its
// first bytes: those that start with prefix to matched, the rest to other.
type sniffer struct {
	raw     stdnet.Listener
	prefix  []byte
	matched *chanListener
	other   *chanListener
	slots   chan struct{}
	wg      sync.WaitGroup
}

func newSniffer(raw stdnet.Listener, prefix []byte) *sniffer {
	return &sniffer{
		raw:     raw,
		prefix:  prefix,
		matched: newChanListener(raw.Addr()),
		other:   newChanListener(raw.Addr()),
		slots:   make(chan struct{}, sniffsMax),
	}
}

func (s *sniffer) run() {
	defer s.matched.Close()
	defer s.other.Close()
	for {
		conn, err := s.raw.Accept()
		if err != nil {
			var ne stdnet.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return
		}
		select {
		case s.slots <- struct{}{}:
		default:
			conn.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.slots }()
			s.route(conn)
		}()
	}
}

func (s *sniffer) route(conn stdnet.Conn) {
	conn.SetReadDeadline(time.Now().Add(sniffTimeout))
	head := make([]byte, len(s.prefix))
	n, err := io.ReadFull(conn, head)
	conn.SetReadDeadline(time.Time{})
	if err != nil && n == 0 {
		conn.Close()
		return
	}
	wrapped := &prefixConn{Conn: conn, r: io.MultiReader(bytes.NewReader(head[:n]), conn)}
	if n == len(s.prefix) && bytes.Equal(head, s.prefix) {
		s.matched.hand(wrapped)
		return
	}
	s.other.hand(wrapped)
}

func (s *sniffer) close() {
	s.raw.Close()
	s.matched.Close()
	s.other.Close()
}

// clientServer is the client side of a member: gRPC and HTTP on every
// client listener, plus the in-memory connection of the JSON gateway.
type clientServer struct {
	m        *Member
	grpc     *grpc.Server
	http     *http.Server
	health   *health.Server
	sniffers []*sniffer
	gateway  *bufconn.Listener
	metrics  []*http.Server
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func newClientServer(m *Member) (*clientServer, error) {
	cs := &clientServer{m: m}
	cs.grpc = grpc.NewServer(append(m.metrics.serverOptions(),
		grpc.MaxRecvMsgSize(m.cfg.MaxRequestBytes+grpcOverheadBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(math.MaxUint32),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: false}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Hour, Timeout: 20 * time.Second}),
		grpc.ChainUnaryInterceptor(m.metrics.unaryInterceptor(), m.requireLeaderUnary),
		grpc.ChainStreamInterceptor(m.metrics.streamInterceptor(), m.requireLeaderStream),
	)...)
	pb.RegisterKVServer(cs.grpc, &kvServer{m: m})
	pb.RegisterWatchServer(cs.grpc, &watchServer{m: m})
	pb.RegisterLeaseServer(cs.grpc, &leaseServer{m: m})
	pb.RegisterClusterServer(cs.grpc, &clusterServer{m: m})
	pb.RegisterMaintenanceServer(cs.grpc, &maintenanceServer{m: m})
	pb.RegisterAuthServer(cs.grpc, &authServer{m: m})
	cs.health = health.NewServer()
	healthpb.RegisterHealthServer(cs.grpc, cs.health)

	ctx, cancel := context.WithCancel(context.Background())
	cs.cancel = cancel
	cs.gateway = bufconn.Listen(gatewayBufferBytes)
	self, err := dialInProcess(ctx, cs.gateway)
	if err != nil {
		cancel()
		return nil, err
	}
	coordination.New(ctx, self, m.lg.Named("coordination")).Register(cs.grpc)
	m.metrics.grpc.InitializeMetrics(cs.grpc)
	handler, err := newHTTPHandler(ctx, m, cs.gateway)
	if err != nil {
		cancel()
		return nil, err
	}
	cs.http = &http.Server{Handler: handler, ReadHeaderTimeout: 30 * time.Second, ErrorLog: zap.NewStdLog(m.lg)}

	listeners := m.cfg.ClientListeners
	if listeners == nil {
		if listeners, err = listenURLs("client", m.cfg.ListenClientURLs); err != nil {
			cancel()
			return nil, err
		}
	}
	metricsListeners := m.cfg.MetricsListeners
	if metricsListeners == nil {
		if metricsListeners, err = listenURLs("metrics", m.cfg.ListenMetricsURLs); err != nil {
			for _, l := range listeners {
				l.Close()
			}
			cancel()
			return nil, err
		}
	}
	for _, l := range metricsListeners {
		// etcd serves these at once, not after the member is ready: a
		// probe must be able to see a member that is not.
		srv := &http.Server{Handler: m.metricsHandler(), ReadHeaderTimeout: 30 * time.Second, ErrorLog: zap.NewStdLog(m.lg)}
		cs.metrics = append(cs.metrics, srv)
		cs.wg.Add(1)
		go func() { defer cs.wg.Done(); srv.Serve(l) }()
	}
	cs.serve(cs.gateway)
	for _, l := range listeners {
		sn := newSniffer(l, http2Preface[:3])
		cs.sniffers = append(cs.sniffers, sn)
		cs.wg.Add(3)
		go func() {
			defer cs.wg.Done()
			// Connections wait in the listen backlog until the member is
			// ready (etcd's ReadyNotify).
			select {
			case <-m.ready:
				m.lg.Info("serving client traffic insecurely; this is strongly discouraged!",
					zap.String("traffic", "grpc+http"), zap.String("address", sn.raw.Addr().String()))
				sn.run()
			case <-ctx.Done():
			}
		}()
		go func() { defer cs.wg.Done(); cs.grpc.Serve(sn.matched) }()
		go func() { defer cs.wg.Done(); cs.http.Serve(sn.other) }()
	}
	return cs, nil
}

// listenURLs listens on each URL; on an error it closes the listeners it
// opened and names the URL, as a `kind` URL.
func listenURLs(kind string, urls []url.URL) ([]stdnet.Listener, error) {
	var out []stdnet.Listener
	for _, u := range urls {
		l, err := stdnet.Listen("tcp", listenHost(u.Host))
		if err != nil {
			for _, l := range out {
				l.Close()
			}
			return nil, fmt.Errorf("listen on %s URL %s: %w", kind, u.String(), err)
		}
		out = append(out, l)
	}
	return out, nil
}

func (cs *clientServer) serve(l stdnet.Listener) {
	cs.wg.Add(1)
	go func() { defer cs.wg.Done(); cs.grpc.Serve(l) }()
}

// requireLeaderUnary fails a call that carries etcd's hasleader metadata
// while the member knows no leader (etcd's unary interceptor).
func (m *Member) requireLeaderUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok && requiresLeader(md) && !m.state.Load().hasLeader() {
		return nil, rpctypes.ErrGRPCNoLeader
	}
	return handler(ctx, req)
}

// requireLeaderStream refuses a stream with hasleader while there is no
// leader; watch streams also end when the leader is lost for long.
func (m *Member) requireLeaderStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if md, ok := metadata.FromIncomingContext(ss.Context()); ok && requiresLeader(md) && !m.state.Load().hasLeader() {
		return rpctypes.ErrGRPCNoLeader
	}
	return handler(srv, ss)
}

// listenHost maps etcd's localhost to the loopback address, as etcd binds
// it.
func listenHost(hostPort string) string {
	host, port, err := stdnet.SplitHostPort(hostPort)
	if err == nil && host == "localhost" {
		return stdnet.JoinHostPort("127.0.0.1", port)
	}
	return hostPort
}

func (cs *clientServer) addrs() []string {
	var out []string
	for _, sn := range cs.sniffers {
		out = append(out, sn.raw.Addr().String())
	}
	return out
}

// stop closes the listeners, ends streams and waits for the servers.
// In-flight unary calls get a short grace period.
func (cs *clientServer) stop() {
	cs.health.Shutdown()
	for _, sn := range cs.sniffers {
		sn.close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cs.http.Shutdown(ctx)
	for _, srv := range cs.metrics {
		srv.Shutdown(ctx)
	}
	done := make(chan struct{})
	go func() { cs.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		cs.grpc.Stop()
		<-done
	}
	cs.cancel()
	cs.gateway.Close()
	for _, sn := range cs.sniffers {
		sn.wg.Wait()
	}
	cs.wg.Wait()
}

package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"math"
	stdnet "net"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/test/bufconn"

	"github.com/noded/noded/server/connmux"
	"github.com/noded/noded/server/coordination"
)

// One port serves gRPC and HTTP, as etcd's does. Package connmux accepts
// every connection, terminates TLS on an https port and routes it: on a
// plain port by its first bytes (the HTTP/2 preface goes to the gRPC
// server, anything else to the HTTP server: /health, /metrics, the /v3
// JSON gateway); on an https port by the ALPN protocol the client
// negotiated (h2 to gRPC, http/1.1 or none to HTTP; the port prefers
// http/1.1, so curl and browsers, which offer both, get HTTP/1.1 and gRPC
// clients, which offer only h2, get gRPC). The peer port is split the
// same way by its first bytes: the transport's preamble goes to the
// transport, HTTP to the small peer API a joining member reads the cluster
// from.
const (
	// routeTimeout bounds a new connection's TLS handshake and first bytes
	// (connmux: each connection has its own deadline, no pool of slots).
	routeTimeout = 5 * time.Second
	// grpcConnectionTimeout bounds a routed gRPC connection's HTTP/2
	// handshake.
	grpcConnectionTimeout = 2 * routeTimeout
	// gatewayBufferBytes sizes the in-memory connection from the JSON
	// gateway to the gRPC server.
	gatewayBufferBytes = 1 << 20
)

var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// Routes of the client port.
const (
	clientRouteGRPC = iota
	clientRouteHTTP
	clientRoutes
)

// classifyClient routes a client-port connection: by ALPN over TLS, by
// its first bytes on a plain port.
func classifyClient(c connmux.Conn) int {
	if c.TLS != nil {
		if c.TLS.NegotiatedProtocol == "h2" {
			return clientRouteGRPC
		}
		return clientRouteHTTP
	}
	head, err := c.Peek(3)
	switch {
	case bytes.Equal(head, http2Preface[:3]):
		return clientRouteGRPC
	case len(head) == 0 && err != nil:
		return connmux.Reject
	}
	return clientRouteHTTP
}

// clientALPN is what an https client port offers, preferred first.
var clientALPN = []string{"http/1.1", "h2"}

// clientServer is the client side of a member: gRPC and HTTP on every
// client listener, plus the in-memory connection of the JSON gateway.
type clientServer struct {
	m      *Member
	grpc   *grpc.Server
	http   *http.Server
	health *health.Server
	muxes  []*connmux.Mux // metrics ports, then client ports
	// clientMuxes are the client ports among muxes.
	clientMuxes []*connmux.Mux
	gateway     *bufconn.Listener
	metrics     []*http.Server
	cancel      context.CancelFunc
	wg          sync.WaitGroup
}

func newClientServer(m *Member) (*clientServer, error) {
	cs := &clientServer{m: m}
	cs.grpc = grpc.NewServer(append(m.metrics.serverOptions(),
		grpc.Creds(muxCredentials{}),
		grpc.ConnectionTimeout(grpcConnectionTimeout),
		grpc.MaxRecvMsgSize(m.cfg.MaxRequestBytes+grpcOverheadBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(math.MaxUint32),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: false}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Hour, Timeout: 20 * time.Second}),
		// A fixed pool of goroutines serves the calls, rather than a new one
		// (and a new stack to grow) per call; past the pool's size gRPC
		// starts goroutines as before.
		grpc.NumStreamWorkers(uint32(streamWorkers())),
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
	cs.http = &http.Server{
		Handler: handler, ReadHeaderTimeout: 30 * time.Second, ErrorLog: zap.NewStdLog(m.lg),
		// HTTP/2 over TLS goes to the gRPC server (ALPN h2); this server
		// speaks HTTP/1.1 only.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}

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
	for i, l := range metricsListeners {
		// etcd serves these at once, not after the member is ready: a
		// probe must be able to see a member that is not.
		mux := m.newMux("metrics", l, schemeOf(m.cfg.ListenMetricsURLs, i), m.clientTLS, 1, nil)
		srv := &http.Server{Handler: m.metricsHandler(), ReadHeaderTimeout: 30 * time.Second, ErrorLog: zap.NewStdLog(m.lg),
			TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
		cs.metrics = append(cs.metrics, srv)
		cs.muxes = append(cs.muxes, mux)
		cs.wg.Add(2)
		go func() { defer cs.wg.Done(); mux.Serve() }()
		go func() { defer cs.wg.Done(); srv.Serve(mux.Listener(0)) }()
	}
	metricsMuxes := len(cs.muxes)
	cs.serve(cs.gateway)
	for i, l := range listeners {
		scheme := schemeOf(m.cfg.ListenClientURLs, i)
		mux := m.newMux("client", l, scheme, m.clientTLS, clientRoutes, classifyClient)
		cs.muxes = append(cs.muxes, mux)
		cs.wg.Add(3)
		go func() {
			defer cs.wg.Done()
			// Connections wait in the listen backlog until the member is
			// ready (etcd's ReadyNotify).
			select {
			case <-m.ready:
				if scheme == "https" {
					m.lg.Info("serving client traffic securely", zap.String("traffic", "grpc+http"), zap.String("address", mux.Addr().String()))
				} else {
					m.lg.Info("serving client traffic insecurely; this is strongly discouraged!",
						zap.String("traffic", "grpc+http"), zap.String("address", mux.Addr().String()))
				}
				mux.Serve()
			case <-ctx.Done():
			}
		}()
		go func() { defer cs.wg.Done(); cs.grpc.Serve(mux.Listener(clientRouteGRPC)) }()
		go func() { defer cs.wg.Done(); cs.http.Serve(mux.Listener(clientRouteHTTP)) }()
	}
	cs.clientMuxes = cs.muxes[metricsMuxes:]
	return cs, nil
}

// listenClientsEarly opens the client and metrics ports that the
// configuration does not hand in, before the data directory loads, as
// etcd's open: a client that connects while a large store loads waits in
// the listen backlog and is served the moment the member is ready
// (newClientServer serves them), instead of being refused and backing off
// (gRPC's reconnect backoff starts at a second and grows). A port in use
// still stops the member before it touches its data. The returned func
// closes what it opened, for a start that fails before serving them.
func (m *Member) listenClientsEarly() (closeOpened func(), err error) {
	var opened []stdnet.Listener
	closeOpened = func() {
		for _, l := range opened {
			l.Close()
		}
	}
	if m.cfg.ClientListeners == nil {
		if m.cfg.ClientListeners, err = listenURLs("client", m.cfg.ListenClientURLs); err != nil {
			return nil, err
		}
		opened = append(opened, m.cfg.ClientListeners...)
	}
	if m.cfg.MetricsListeners == nil {
		if m.cfg.MetricsListeners, err = listenURLs("metrics", m.cfg.ListenMetricsURLs); err != nil {
			closeOpened()
			return nil, err
		}
		opened = append(opened, m.cfg.MetricsListeners...)
	}
	return closeOpened, nil
}

// schemeOf is the scheme of urls[i], http when there is none (a listener
// handed in without its URL).
func schemeOf(urls []url.URL, i int) string {
	if i < len(urls) && urls[i].Scheme != "" {
		return urls[i].Scheme
	}
	return "http"
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

// streamWorkers is the size of the gRPC server's pool of call goroutines:
// a few per processor, so that calls waiting on the member loop do not
// leave processors idle.
func streamWorkers() int { return 4 * runtime.GOMAXPROCS(0) }

func (cs *clientServer) serve(l stdnet.Listener) {
	cs.wg.Add(1)
	go func() { defer cs.wg.Done(); cs.grpc.Serve(l) }()
}

// requireLeaderUnary fails a call that carries etcd's hasleader metadata
// while the member knows no leader (etcd's unary interceptor).
func (m *Member) requireLeaderUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if requiresLeader(ctx) && !m.state.Load().hasLeader() {
		return nil, rpctypes.ErrGRPCNoLeader
	}
	return handler(ctx, req)
}

// requireLeaderStream refuses a stream with hasleader while there is no
// leader; watch streams also end when the leader is lost for long.
func (m *Member) requireLeaderStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if requiresLeader(ss.Context()) && !m.state.Load().hasLeader() {
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
	for _, mux := range cs.clientMuxes {
		out = append(out, mux.Addr().String())
	}
	return out
}

// stop closes the listeners, ends streams and waits for the servers.
// In-flight unary calls get a short grace period.
func (cs *clientServer) stop() {
	cs.health.Shutdown()
	for _, mux := range cs.muxes {
		mux.Close()
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
	cs.wg.Wait()
}

package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Modes of --proxy, and the gateway's.
const (
	ModeOff      = "off"
	ModeOn       = "on"
	ModeReadonly = "readonly"
	// ModeGateway forwards every connection as it is (L4), as etcd's
	// gateway does: no HTTP parsing, no endpoint refresh.
	ModeGateway = "gateway"
)

// Config configures a proxy node.
type Config struct {
	Mode      string         // ModeOn or ModeReadonly
	Listeners []net.Listener // the client port(s); the proxy closes them
	// Endpoints are the cluster's client URLs to start from.
	Endpoints []string
	// FailureWait is how long an endpoint that failed is skipped (etcd's
	// --proxy-failure-wait); RefreshInterval how often the endpoints are
	// asked again (--proxy-refresh-interval; 0: never); DialTimeout bounds
	// a connection attempt (--proxy-dial-timeout).
	FailureWait     time.Duration
	RefreshInterval time.Duration
	DialTimeout     time.Duration
	// ReadTimeout and WriteTimeout bound an HTTP request forwarded to the
	// cluster (--proxy-read-timeout, --proxy-write-timeout; 0: none).
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	Logger       *zap.Logger
}

// Bounds on what the proxy holds.
const (
	// connsMax bounds the client connections forwarded at once.
	connsMax = 16384
	// sniffTimeout bounds the wait for a connection's first bytes.
	sniffTimeout = 10 * time.Second
)

var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// Proxy is a running proxy node.
type Proxy struct {
	cfg       Config
	lg        *zap.Logger
	eps       *endpoints
	ctx       context.Context
	cancel    context.CancelFunc
	httpConns *connListener
	httpSrv   *http.Server
	slots     chan struct{}
	wg        sync.WaitGroup
}

// Start starts a proxy on cfg.Listeners.
func Start(cfg Config) (*Proxy, error) {
	if cfg.Mode != ModeOn && cfg.Mode != ModeReadonly && cfg.Mode != ModeGateway {
		return nil, errors.New("proxy: mode must be on, readonly or gateway")
	}
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("proxy: no cluster endpoint to forward to")
	}
	if cfg.FailureWait <= 0 {
		cfg.FailureWait = 5 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = time.Second
	}
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{cfg: cfg, lg: lg, eps: newEndpoints(hostsOf(cfg.Endpoints), cfg.FailureWait), ctx: ctx, cancel: cancel,
		slots: make(chan struct{}, connsMax)}
	p.httpConns = &connListener{conns: make(chan net.Conn), done: ctx.Done(), addr: cfg.Listeners[0].Addr()}
	p.httpSrv = &http.Server{Handler: p.httpHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(lg)}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.httpSrv.Serve(p.httpConns)
	}()
	for _, l := range cfg.Listeners {
		p.wg.Add(1)
		go p.accept(l)
	}
	if cfg.RefreshInterval > 0 {
		p.wg.Add(1)
		go p.refreshLoop()
	}
	lg.Info("proxy started", zap.String("mode", cfg.Mode), zap.Strings("endpoints", p.eps.list()))
	return p, nil
}

// Stop closes the listeners and every forwarded connection.
func (p *Proxy) Stop() {
	p.cancel()
	for _, l := range p.cfg.Listeners {
		l.Close()
	}
	p.httpSrv.Close()
	p.wg.Wait()
}

// Endpoints are the client addresses the proxy forwards to now.
func (p *Proxy) Endpoints() []string { return p.eps.list() }

func (p *Proxy) refreshLoop() {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
			p.eps.refresh(p.ctx, p.cfg.DialTimeout+5*time.Second, p.lg)
		}
	}
}

func (p *Proxy) accept(l net.Listener) {
	defer p.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		select {
		case p.slots <- struct{}{}:
		default:
			p.lg.Warn("proxy: too many client connections; closing one", zap.Int("max", connsMax))
			c.Close()
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-p.slots }()
			p.serveConn(c)
		}()
	}
}

// serveConn sends a gRPC (HTTP/2) connection to a member as it is, and
// an HTTP/1 one to the proxy's HTTP server, which forwards each request.
func (p *Proxy) serveConn(c net.Conn) {
	if p.cfg.Mode == ModeGateway {
		p.pipe(c)
		return
	}
	c.SetReadDeadline(time.Now().Add(sniffTimeout))
	head := make([]byte, len(http2Preface))
	n, err := io.ReadFull(c, head)
	c.SetReadDeadline(time.Time{})
	conn := &peekedConn{Conn: c, head: head[:n]}
	if err == nil && bytes.Equal(head, http2Preface) {
		if p.cfg.Mode == ModeReadonly {
			// A readonly proxy cannot tell a gRPC read from a write.
			p.lg.Warn("readonly proxy: refusing a gRPC connection", zap.Stringer("client", c.RemoteAddr()))
			c.Close()
			return
		}
		p.pipe(conn)
		return
	}
	if n == 0 {
		c.Close()
		return
	}
	select {
	case p.httpConns.conns <- conn:
	case <-p.ctx.Done():
		c.Close()
	}
}

// pipe copies a client connection to an endpoint and back.
func (p *Proxy) pipe(client net.Conn) {
	defer client.Close()
	upstream, addr, err := p.eps.dial(p.ctx, p.cfg.DialTimeout)
	if err != nil {
		p.lg.Warn("proxy: cannot forward a connection", zap.Error(err))
		return
	}
	defer upstream.Close()
	p.lg.Debug("proxy: forwarding a connection", zap.String("endpoint", addr))
	splice(p.ctx, client, upstream)
}

// splice copies both ways until either side ends or ctx is done.
func splice(ctx context.Context, a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	select {
	case <-done:
	case <-ctx.Done():
	}
	a.Close()
	b.Close()
	<-done
}

// httpHandler forwards each HTTP request to an endpoint, trying the next
// when one does not answer; a readonly proxy answers writes with 501, as
// etcd's does.
func (p *Proxy) httpHandler() http.Handler {
	transport := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: p.cfg.DialTimeout}).DialContext,
		ResponseHeaderTimeout: p.cfg.ReadTimeout,
		MaxIdleConnsPerHost:   64,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.cfg.Mode == ModeReadonly && r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.WriteHeader(http.StatusNotImplemented)
			return
		}
		// The body is read once so that it can go to the next endpoint.
		var body []byte
		if r.Body != nil {
			var err error
			body, err = io.ReadAll(io.LimitReader(r.Body, 64<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		var lastErr error
		for _, addr := range p.eps.pick() {
			out := r.Clone(r.Context())
			out.URL.Scheme, out.URL.Host, out.Host = "http", addr, addr
			out.RequestURI = ""
			out.Body = io.NopCloser(bytes.NewReader(body))
			out.ContentLength = int64(len(body))
			resp, err := transport.RoundTrip(out)
			if err != nil {
				if r.Context().Err() != nil {
					return
				}
				p.eps.failed(addr)
				lastErr = err
				continue
			}
			p.eps.ok(addr)
			copyResponse(w, resp)
			return
		}
		p.lg.Warn("proxy: no endpoint answered an HTTP request", zap.Error(lastErr))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"message":"proxy: endpoints are unavailable"}`))
	})
}

// copyResponse writes resp to w, flushing as it goes (a v2 wait streams).
func copyResponse(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		if strings.EqualFold(k, "Connection") {
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

// peekedConn replays the bytes read to sniff it.
type peekedConn struct {
	net.Conn
	head []byte
}

func (c *peekedConn) Read(b []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(b, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// connListener hands sniffed connections to an http.Server.
type connListener struct {
	conns chan net.Conn
	done  <-chan struct{}
	addr  net.Addr
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error   { return nil }
func (l *connListener) Addr() net.Addr { return l.addr }

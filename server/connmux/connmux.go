// Package connmux serves one listening port for several servers: it
// accepts every connection, terminates TLS when the port is https, routes
// the connection to one of its servers (by the ALPN protocol the client
// negotiated, or by its first bytes), and keeps the number of connections
// open within limits without ever shutting new clients out.
//
// Each accepted connection gets a goroutine of its own that routes it
// within RouteTimeout (the TLS handshake and the first bytes together), so
// a connection that stays silent costs a goroutine and a socket for that
// long and holds nothing anyone else waits for: there is no pool of
// routing slots for idle sockets to fill. Connections are counted in all
// and per source address. When a new connection would exceed
// ConnectionsMax or ConnectionsPerSourceMax, or the process runs out of
// file descriptors, the oldest idle connection is closed to make room: one
// still being routed first, then one that moved no byte for IdleAfter.
// Only when every connection is busy is the new one refused.
//
// A routed connection is handed over as the server expects it: a TLS
// connection whose route was chosen by ALPN is the *tls.Conn itself (so
// net/http sets Request.TLS and a gRPC server sees the connection state);
// one whose first bytes were read replays them first.
//
// connmux may import the standard library only.
package connmux

import (
	"container/list"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Reject is Classify's answer for a connection no server takes.
const Reject = -1

// Conn is what Classify sees of a connection: the TLS state (nil on a
// plain port) and its first bytes on demand.
type Conn struct {
	// TLS is the state after the handshake; nil on a plain port.
	TLS *tls.ConnectionState
	// Peek returns the connection's first n bytes, or fewer and the read
	// error if the connection ended or stayed silent for the rest of
	// RouteTimeout. The bytes are replayed to the server it is routed to.
	Peek func(n int) ([]byte, error)
}

// Config configures a Mux. Zero values take the defaults below.
type Config struct {
	// TLS terminates TLS on every connection before it is routed; nil
	// serves plain TCP.
	TLS *tls.Config
	// Check runs after a successful handshake (a CRL, a SAN check); an
	// error closes the connection and goes to OnRejected.
	Check func(*tls.Conn) error
	// Routes is the number of servers; Classify returns an index below it,
	// or Reject.
	Routes   int
	Classify func(Conn) int
	// RouteTimeout bounds the handshake and the wait for the bytes Classify
	// peeks at.
	RouteTimeout time.Duration
	// ConnectionsMax bounds the connections open at once (routed or not);
	// ConnectionsPerSourceMax those from one IP address.
	ConnectionsMax          int
	ConnectionsPerSourceMax int
	// IdleAfter: a routed connection that moved no byte for this long may
	// be closed to make room.
	IdleAfter time.Duration
	// OnRejected hears of every connection closed before it was routed
	// because of the client: a failed handshake or Check (state is the
	// handshake's, possibly incomplete), silence, or Classify's Reject.
	// It must not block.
	OnRejected func(conn net.Conn, state *tls.ConnectionState, err error)
	// OnShed hears of every connection closed, or refused, to keep within
	// the limits. It must not block.
	OnShed func(remote net.Addr, reason string)
}

const (
	defaultRouteTimeout = 5 * time.Second
	defaultIdleAfter    = 30 * time.Second
	// DefaultConnectionsMax is the bound when the file descriptor limit is
	// unknown; DefaultConnectionsFor derives one from the limit.
	DefaultConnectionsMax = 16384
	// routedQueueMax bounds the routed connections waiting for their
	// server's Accept; a routing goroutine waits beyond it.
	routedQueueMax = 128
	// acceptRetryDelayMax bounds the wait after an Accept error.
	acceptRetryDelayMax = time.Second
	// clockTick is the resolution of the activity clock.
	clockTick = time.Second
)

// DefaultConnectionsFor is a per-port bound for a process allowed
// fileLimit descriptors: three quarters of them, so the other port, the
// data files and outbound connections keep room (and the limit is reached
// before the kernel's, whose refusal costs an accept retry).
func DefaultConnectionsFor(fileLimit uint64) int {
	if fileLimit == 0 {
		return DefaultConnectionsMax
	}
	return int(max(256, min(fileLimit*3/4, 1<<20)))
}

// ErrClosed is returned by Serve and by the route listeners' Accept once
// the Mux is closed.
var ErrClosed = net.ErrClosed

// errReject is OnRejected's error for a connection Classify refused.
var errReject = errors.New("connmux: no server takes this connection")

// Stats count a Mux's connections.
type Stats struct {
	Open     int    // open now, routed or not
	Routing  int    // open now and not routed yet
	Accepted uint64 // since start
	Rejected uint64 // closed before routing: handshake, check, silence, Reject
	Shed     uint64 // closed to make room for a newer connection
	Refused  uint64 // closed at once: over a limit with nothing idle to shed
}

// Mux is one port's acceptor. Create it with New, run Serve, give each
// route's Listener to its server.
type Mux struct {
	raw    net.Listener
	cfg    Config
	routes []*routeListener
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	clock atomic.Int64 // coarse time (UnixNano), for activity stamps

	mu       sync.Mutex
	all      *list.List // *tracked, oldest first
	routing  *list.List // *tracked not yet routed, oldest first
	sources  map[string]*list.List
	accepted uint64
	rejected uint64
	shed     uint64
	refused  uint64
}

// New returns a Mux over raw.
func New(raw net.Listener, cfg Config) *Mux {
	if cfg.RouteTimeout <= 0 {
		cfg.RouteTimeout = defaultRouteTimeout
	}
	if cfg.IdleAfter <= 0 {
		cfg.IdleAfter = defaultIdleAfter
	}
	if cfg.ConnectionsMax <= 0 {
		cfg.ConnectionsMax = DefaultConnectionsMax
	}
	if cfg.ConnectionsPerSourceMax <= 0 || cfg.ConnectionsPerSourceMax > cfg.ConnectionsMax {
		cfg.ConnectionsPerSourceMax = cfg.ConnectionsMax
	}
	if cfg.Routes < 1 {
		cfg.Routes = 1
	}
	m := &Mux{raw: raw, cfg: cfg, closed: make(chan struct{}), all: list.New(), routing: list.New(), sources: map[string]*list.List{}}
	for range cfg.Routes {
		m.routes = append(m.routes, &routeListener{m: m, conns: make(chan net.Conn, routedQueueMax)})
	}
	m.clock.Store(time.Now().UnixNano())
	return m
}

// Listener is the listener of route i, for its server's Serve.
func (m *Mux) Listener(i int) net.Listener { return m.routes[i] }

// Addr is the port's address.
func (m *Mux) Addr() net.Addr { return m.raw.Addr() }

// Serve accepts connections until the Mux is closed or the listener
// fails, and returns ErrClosed after Close.
func (m *Mux) Serve() error {
	// Serve counts in wg while it runs, so admit's Add never races Close's
	// Wait at zero.
	m.wg.Add(2)
	defer m.wg.Done()
	go func() {
		defer m.wg.Done()
		m.runClock()
	}()
	var retryDelay time.Duration
	for {
		raw, err := m.raw.Accept()
		if err != nil {
			if m.isClosed() {
				return ErrClosed
			}
			if !isTemporary(err) {
				return fmt.Errorf("connmux: accept on %s: %w", m.raw.Addr(), err)
			}
			// Out of file descriptors: make room by closing the oldest idle
			// connection, then retry; wait longer while nothing frees one.
			if isFileLimit(err) && m.shedOne("the process is out of file descriptors") {
				retryDelay = 0
			} else {
				retryDelay = min(max(2*retryDelay, 5*time.Millisecond), acceptRetryDelayMax)
			}
			select {
			case <-time.After(retryDelay):
			case <-m.closed:
				return ErrClosed
			}
			continue
		}
		retryDelay = 0
		m.admit(raw)
	}
}

func isTemporary(err error) bool {
	var ne interface{ Temporary() bool }
	return errors.As(err, &ne) && ne.Temporary() || isFileLimit(err)
}

func isFileLimit(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

func (m *Mux) runClock() {
	ticker := time.NewTicker(clockTick)
	defer ticker.Stop()
	for {
		select {
		case now := <-ticker.C:
			m.clock.Store(now.UnixNano())
		case <-m.closed:
			return
		}
	}
}

func (m *Mux) isClosed() bool {
	select {
	case <-m.closed:
		return true
	default:
		return false
	}
}

// admit tracks raw within the limits and starts routing it.
func (m *Mux) admit(raw net.Conn) {
	source := sourceOf(raw.RemoteAddr())
	c := &tracked{Conn: raw, m: m, source: source}
	c.lastActive.Store(m.clock.Load())

	m.mu.Lock()
	m.accepted++
	var victims []*tracked
	if l := m.sources[source]; l != nil && l.Len() >= m.cfg.ConnectionsPerSourceMax {
		if v := m.idleLocked(l, source); v != nil {
			victims = append(victims, v)
		}
	}
	if m.all.Len()-len(victims) >= m.cfg.ConnectionsMax {
		if v := m.idleLocked(nil, ""); v != nil && (len(victims) == 0 || v != victims[0]) {
			victims = append(victims, v)
		}
	}
	full := m.all.Len()-len(victims) >= m.cfg.ConnectionsMax ||
		(m.sources[source] != nil && m.sources[source].Len()-countSource(victims, source) >= m.cfg.ConnectionsPerSourceMax)
	if full {
		m.refused++
		m.mu.Unlock()
		raw.Close()
		m.notifyShed(raw.RemoteAddr(), "refused: every connection is busy and the connection limit is reached")
		return
	}
	for _, v := range victims {
		m.untrackLocked(v)
		m.shed++
	}
	m.trackLocked(c)
	m.wg.Add(1)
	m.mu.Unlock()
	for _, v := range victims {
		v.Conn.Close()
		m.notifyShed(v.RemoteAddr(), "closed to make room: the oldest idle connection")
	}
	go func() {
		defer m.wg.Done()
		m.route(c)
	}()
}

func countSource(cs []*tracked, source string) int {
	n := 0
	for _, c := range cs {
		if c.source == source {
			n++
		}
	}
	return n
}

// shedOne closes the oldest idle connection, if any (for the file limit).
func (m *Mux) shedOne(reason string) bool {
	m.mu.Lock()
	v := m.idleLocked(nil, "")
	if v != nil {
		m.untrackLocked(v)
		m.shed++
	}
	m.mu.Unlock()
	if v == nil {
		return false
	}
	v.Conn.Close()
	m.notifyShed(v.RemoteAddr(), "closed to make room: "+reason)
	return true
}

// idleLocked returns the connection to shed among those of source (all
// when l is nil): the oldest still routing, else the oldest routed one
// idle for IdleAfter, else nil.
func (m *Mux) idleLocked(l *list.List, source string) *tracked {
	for e := m.routing.Front(); e != nil; e = e.Next() {
		if c := e.Value.(*tracked); l == nil || c.source == source {
			return c
		}
	}
	idleBefore := m.clock.Load() - int64(m.cfg.IdleAfter)
	scan := l
	if scan == nil {
		scan = m.all
	}
	for e := scan.Front(); e != nil; e = e.Next() {
		if c := e.Value.(*tracked); c.routed.Load() && c.lastActive.Load() <= idleBefore {
			return c
		}
	}
	return nil
}

func (m *Mux) trackLocked(c *tracked) {
	c.inAll = m.all.PushBack(c)
	c.inRouting = m.routing.PushBack(c)
	l := m.sources[c.source]
	if l == nil {
		l = list.New()
		m.sources[c.source] = l
	}
	c.inSource = l.PushBack(c)
	c.tracked = true
}

func (m *Mux) untrackLocked(c *tracked) {
	if !c.tracked {
		return
	}
	c.tracked = false
	m.all.Remove(c.inAll)
	if c.inRouting != nil {
		m.routing.Remove(c.inRouting)
		c.inRouting = nil
	}
	l := m.sources[c.source]
	l.Remove(c.inSource)
	if l.Len() == 0 {
		delete(m.sources, c.source)
	}
}

func (m *Mux) markRouted(c *tracked) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.inRouting != nil {
		m.routing.Remove(c.inRouting)
		c.inRouting = nil
	}
	c.routed.Store(true)
}

func (m *Mux) notifyShed(remote net.Addr, reason string) {
	if m.cfg.OnShed != nil {
		m.cfg.OnShed(remote, reason)
	}
}

func sourceOf(addr net.Addr) string {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

// route handshakes, classifies and hands c over, or closes it.
func (m *Mux) route(c *tracked) {
	deadline := time.Now().Add(m.cfg.RouteTimeout)
	c.SetDeadline(deadline)
	var conn net.Conn = c
	var state *tls.ConnectionState
	if m.cfg.TLS != nil {
		tc := tls.Server(c, m.cfg.TLS)
		if err := tc.Handshake(); err != nil {
			st := tc.ConnectionState()
			m.reject(c, tc, &st, err)
			return
		}
		st := tc.ConnectionState()
		state = &st
		if m.cfg.Check != nil {
			if err := m.cfg.Check(tc); err != nil {
				m.reject(c, tc, state, err)
				return
			}
		}
		conn = tc
	}
	var head []byte
	var peekErr error
	peek := func(n int) ([]byte, error) {
		if len(head) < n && peekErr == nil {
			more := make([]byte, n-len(head))
			got, err := io.ReadFull(conn, more)
			head = append(head, more[:got]...)
			peekErr = err
		}
		if len(head) >= n {
			return head[:n], nil
		}
		return head, peekErr
	}
	i := Reject
	if m.cfg.Classify != nil {
		i = m.cfg.Classify(Conn{TLS: state, Peek: peek})
	} else if len(m.routes) == 1 {
		i = 0
	}
	if i == Reject || i >= len(m.routes) {
		err := peekErr
		if err == nil {
			err = errReject
		}
		m.reject(c, conn, state, err)
		return
	}
	if len(head) > 0 {
		if state != nil {
			conn = &replayTLSConn{replayConn{Conn: conn, head: head}}
		} else {
			conn = &replayConn{Conn: conn, head: head}
		}
	}
	c.SetDeadline(time.Time{})
	m.markRouted(c)
	m.routes[i].hand(conn)
}

// reject closes a connection the client spoiled and says why.
func (m *Mux) reject(c *tracked, conn net.Conn, state *tls.ConnectionState, err error) {
	m.mu.Lock()
	shed := !c.tracked
	if !shed {
		m.rejected++
	}
	m.mu.Unlock()
	if !shed && m.cfg.OnRejected != nil {
		m.cfg.OnRejected(conn, state, err)
	}
	c.Close()
}

// Close stops accepting, closes the route listeners and every connection
// not routed yet, and waits for the routing goroutines. Routed connections
// belong to their servers.
func (m *Mux) Close() error {
	m.once.Do(func() { close(m.closed) })
	err := m.raw.Close()
	m.mu.Lock()
	var routing []*tracked
	for e := m.routing.Front(); e != nil; {
		c := e.Value.(*tracked)
		e = e.Next()
		m.untrackLocked(c)
		routing = append(routing, c)
	}
	m.mu.Unlock()
	for _, c := range routing {
		c.Conn.Close()
	}
	m.wg.Wait()
	return err
}

// Stats returns the counts as of now.
func (m *Mux) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{Open: m.all.Len(), Routing: m.routing.Len(), Accepted: m.accepted, Rejected: m.rejected, Shed: m.shed, Refused: m.refused}
}

// tracked is an accepted connection while it is open: closing it, by
// whoever holds it, forgets it.
type tracked struct {
	net.Conn
	m          *Mux
	source     string
	lastActive atomic.Int64 // the clock when a byte last moved
	routed     atomic.Bool
	closeOnce  sync.Once

	// Guarded by m.mu.
	tracked                    bool
	inAll, inRouting, inSource *list.Element
}

func (c *tracked) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.lastActive.Store(c.m.clock.Load())
	}
	return n, err
}

func (c *tracked) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.lastActive.Store(c.m.clock.Load())
	}
	return n, err
}

func (c *tracked) Close() error {
	c.closeOnce.Do(func() {
		c.m.mu.Lock()
		c.m.untrackLocked(c)
		c.m.mu.Unlock()
	})
	return c.Conn.Close()
}

// CloseWrite half-closes a TCP connection (net/http uses it to end a
// response cleanly).
func (c *tracked) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// replayConn reads the bytes Classify peeked at before the rest.
type replayConn struct {
	net.Conn
	head []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// replayTLSConn is a replayConn over a *tls.Conn. It passes on the TLS
// state: net/http looks for this method to set Request.TLS.
type replayTLSConn struct{ replayConn }

func (c *replayTLSConn) ConnectionState() tls.ConnectionState {
	return c.Conn.(*tls.Conn).ConnectionState()
}

// routeListener is the net.Listener of one route.
type routeListener struct {
	m     *Mux
	conns chan net.Conn
}

func (l *routeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.m.closed:
		return nil, ErrClosed
	}
}

// Close closes the whole Mux: the routes share one port, and a server that
// stops (net's transport on Close) takes the port down with it.
func (l *routeListener) Close() error {
	l.m.once.Do(func() { close(l.m.closed) })
	return l.m.raw.Close()
}

func (l *routeListener) Addr() net.Addr { return l.m.raw.Addr() }

// hand gives conn to the route's server, or closes it if the Mux closes
// first.
func (l *routeListener) hand(conn net.Conn) {
	select {
	case l.conns <- conn:
	case <-l.m.closed:
		conn.Close()
	}
}

package net

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	stdnet "net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// Handler receives what arrives. Its methods are called from the
// transport's goroutines, never from inside Send, and never after Close has
// returned. The implementation (the server's member loop) must not block
// long: it hands messages to its own bounded queue. While a method runs,
// the stream it came from waits.
type Handler interface {
	// Process receives an inbound message; a MsgSnap arrives with its
	// snapshot data fully reassembled and verified. An error is counted
	// (Stats.ProcessErrors); for a MsgSnap it also fails the sender's
	// snapshot.
	Process(m *raftpb.Message) error
	// ReportUnreachable says a message to the peer was dropped or its
	// stream was lost (raft's RawNode.ReportUnreachable).
	ReportUnreachable(id uint64)
	// ReportSnapshot gives the outcome of sending a MsgSnap to the peer
	// (raft's RawNode.ReportSnapshot).
	ReportSnapshot(id uint64, failed bool)
}

// ErrClosed is returned by Serve once the transport is closed.
var ErrClosed = errors.New("net: transport closed")

const (
	// inboundConnectionsMax bounds accepted connections open at once:
	// two message streams per peer pair and a few snapshots fit many times
	// over; more is a misbehaving client. At the bound the oldest
	// connection still in its hello is closed to make room (so silent
	// connections cannot keep peers out); only when every connection is an
	// admitted stream is a new one refused. Connections being closed may
	// pass the bound briefly.
	inboundConnectionsMax = 256
	// snapshotSendsMax bounds snapshots being sent at once (raft keeps at
	// most one in flight per follower; this bounds the memory and
	// bandwidth of several followers catching up together).
	snapshotSendsMax = 8
	// snapshotReceivesMax bounds snapshots being reassembled at once, each
	// up to SnapshotBytesMax of memory.
	snapshotReceivesMax = 2
	// acceptRetryDelayMax bounds the wait after a transient Accept error.
	acceptRetryDelayMax = time.Second
	// removedMembersMax bounds the removed member IDs remembered for
	// refusing their streams; the oldest are forgotten first.
	removedMembersMax = 4096
)

// ErrRemoved is wrapped by the dial error of a member that a peer refused
// because it was removed from the cluster.
var ErrRemoved = errors.New("net: this member was removed from the cluster")

// TCPTransport carries raft messages between members over TCP (or TLS):
// one outbound message stream per peer that it dials and keeps up, inbound
// streams that peers dial, and a connection of its own for every snapshot.
type TCPTransport struct {
	cfg       Config
	handler   Handler
	logPrefix string
	reports   *reporter

	ctx    context.Context // cancelled by Close: aborts dials and waits
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the transport started, and Serve

	snapshotSendSlots    chan struct{} // a token per snapshot being sent
	snapshotReceiveSlots chan struct{} // a token per snapshot being received

	mu        sync.RWMutex
	closed    bool
	peers     map[uint64]*peer
	listeners map[stdnet.Listener]struct{}
	accepted  map[stdnet.Conn]struct{} // inbound connections, closed by Close
	// inHello holds the accepted connections not admitted yet, oldest
	// first: the ones closed to make room at inboundConnectionsMax.
	inHello      *list.List
	inHelloElems map[stdnet.Conn]*list.Element
	removed      map[uint64]struct{} // removed members, refused with HelloRemoved
	// removedOrder holds the keys of removed, oldest first, to forget the
	// oldest beyond removedMembersMax.
	removedOrder []uint64

	removedReported atomic.Bool // OnRemoved was called

	refusals refusalLog
	counters transportCounters
}

type transportCounters struct {
	connectionsShed    atomic.Uint64
	connectionsRefused atomic.Uint64
	droppedUnknownPeer atomic.Uint64
	streamsRefused     atomic.Uint64
	protocolErrors     atomic.Uint64
	processErrors      atomic.Uint64
}

// NewTCPTransport returns a transport for cfg that delivers to h. It starts
// one goroutine (the reporter); peers and listeners add more.
func NewTCPTransport(cfg Config, h Handler) (*TCPTransport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("net: NewTCPTransport needs a Handler")
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &TCPTransport{
		cfg:                  cfg,
		handler:              h,
		logPrefix:            fmt.Sprintf("net: member %x: ", cfg.LocalID),
		reports:              newReporter(h),
		ctx:                  ctx,
		cancel:               cancel,
		snapshotSendSlots:    make(chan struct{}, snapshotSendsMax),
		snapshotReceiveSlots: make(chan struct{}, snapshotReceivesMax),
		peers:                map[uint64]*peer{},
		listeners:            map[stdnet.Listener]struct{}{},
		accepted:             map[stdnet.Conn]struct{}{},
		inHello:              list.New(),
		inHelloElems:         map[stdnet.Conn]*list.Element{},
		removed:              map[uint64]struct{}{},
	}
	removeSpoolLeftovers(cfg.SnapshotSpoolDir, t.logf)
	t.spawn(func() { t.reports.run(ctx) })
	return t, nil
}

func (t *TCPTransport) logf(format string, args ...any) {
	t.cfg.Logger(t.logPrefix+format, args...)
}

// warnf logs a protocol violation or a refusal (Config.WarnLogger).
func (t *TCPTransport) warnf(format string, args ...any) {
	t.cfg.WarnLogger(t.logPrefix+format, args...)
}

// spawn runs f on a goroutine that Close waits for. Once the transport is
// closed it runs nothing and returns false. The caller must not hold t.mu.
func (t *TCPTransport) spawn(f func()) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.spawnLocked(f)
}

// spawnLocked is spawn for a caller that holds t.mu (read or write): Close
// sets closed under the write lock before it waits, so no Add can follow
// the Wait.
func (t *TCPTransport) spawnLocked(f func()) bool {
	if t.closed {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f()
	}()
	return true
}

// Serve accepts peer connections on l until l fails or the transport is
// closed, then returns (ErrClosed after Close). The server creates l from
// --listen-peer-urls and wraps it with tls.NewListener for https. Close
// closes l.
func (t *TCPTransport) Serve(l stdnet.Listener) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		l.Close()
		return ErrClosed
	}
	t.listeners[l] = struct{}{}
	t.wg.Add(1)
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.listeners, l)
		t.mu.Unlock()
		t.wg.Done()
	}()

	var retryDelay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if t.ctx.Err() != nil {
				return ErrClosed
			}
			// Like net/http: ride out transient failures (out of file
			// descriptors) with a bounded backoff; anything else ends Serve.
			if temporary, ok := err.(interface{ Temporary() bool }); ok && temporary.Temporary() {
				retryDelay = min(max(2*retryDelay, 5*time.Millisecond), acceptRetryDelayMax)
				t.logf("accept on %s: %v; retrying in %v", l.Addr(), err, retryDelay)
				if !sleepCtx(t.ctx, retryDelay) {
					return ErrClosed
				}
				continue
			}
			return fmt.Errorf("net: accept on %s: %w", l.Addr(), err)
		}
		retryDelay = 0
		t.accept(conn)
	}
}

// accept hands conn to a goroutine of its own, within inboundConnectionsMax:
// at the bound, the oldest connection still in its hello makes room.
func (t *TCPTransport) accept(conn stdnet.Conn) {
	t.mu.Lock()
	var victim stdnet.Conn
	if len(t.accepted) >= inboundConnectionsMax {
		front := t.inHello.Front()
		if front == nil {
			t.mu.Unlock()
			t.counters.connectionsRefused.Add(1)
			if t.refusals.shouldLog("inbound-full", time.Now()) {
				t.logf("refusing connection from %s: %d inbound streams already open", conn.RemoteAddr(), inboundConnectionsMax)
			}
			conn.Close()
			return
		}
		victim = front.Value.(stdnet.Conn)
		t.inHello.Remove(front)
		delete(t.inHelloElems, victim)
	}
	started := t.spawnLocked(func() {
		defer func() {
			t.mu.Lock()
			delete(t.accepted, conn)
			t.leaveHelloLocked(conn)
			t.mu.Unlock()
			conn.Close()
		}()
		t.serveConn(conn)
	})
	if started {
		t.accepted[conn] = struct{}{}
		t.inHelloElems[conn] = t.inHello.PushBack(conn)
	}
	t.mu.Unlock()
	if !started {
		conn.Close()
	}
	if victim != nil {
		victim.Close()
		t.counters.connectionsShed.Add(1)
		if t.refusals.shouldLog("inbound-shed", time.Now()) {
			t.logf("closed the connection from %s, silent in its hello, to make room: %d inbound connections open", victim.RemoteAddr(), inboundConnectionsMax)
		}
	}
}

// leaveHelloLocked forgets conn as a connection in its hello; t.mu is held.
func (t *TCPTransport) leaveHelloLocked(conn stdnet.Conn) {
	if e, ok := t.inHelloElems[conn]; ok {
		t.inHello.Remove(e)
		delete(t.inHelloElems, conn)
	}
}

// AddPeer starts keeping a message stream to member id, dialling urls (like
// http://10.0.0.2:2380 or https://...; the first that answers is kept), and
// admits the streams id dials here. Adding a known peer updates its URLs.
// The local member is not a peer of itself and is ignored.
func (t *TCPTransport) AddPeer(id uint64, urls []string) {
	if id == t.cfg.LocalID {
		return
	}
	t.checkURLs(id, urls)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if p, ok := t.peers[id]; ok {
		p.setURLs(urls)
		return
	}
	if _, ok := t.removed[id]; ok {
		// Member IDs are not reused; this is the server's call to make.
		t.logf("AddPeer: member %x was removed from the cluster; admitting it again", id)
		delete(t.removed, id)
		t.removedOrder = slices.DeleteFunc(t.removedOrder, func(removedID uint64) bool { return removedID == id })
	}
	p := newPeer(t, id, urls)
	t.peers[id] = p
	t.spawnLocked(p.run)
}

// UpdatePeer replaces the URLs of member id. A stream open to a URL no
// longer listed is closed and redialled.
func (t *TCPTransport) UpdatePeer(id uint64, urls []string) {
	t.checkURLs(id, urls)
	p, _ := t.peer(id)
	if p == nil {
		t.logf("UpdatePeer: member %x is not a peer", id)
		return
	}
	p.setURLs(urls)
}

// checkURLs logs URLs that cannot be dialled; the peer is kept (the server
// validates URLs; this is a second line) and its status shows the error.
func (t *TCPTransport) checkURLs(id uint64, urls []string) {
	if len(urls) == 0 {
		t.logf("peer %x has no URLs; it cannot be dialled", id)
	}
	for _, u := range urls {
		if _, _, err := parsePeerURL(u); err != nil {
			t.logf("peer %x: %v", id, err)
		}
	}
}

// RemovePeer stops talking to member id, which was removed from the
// cluster: its streams and snapshot sends are closed, queued messages
// dropped, and its hellos answered with HelloRemoved from now on, so that
// it learns it was removed. It also takes IDs that are not peers: on
// start, the server calls it for every member removed before.
func (t *TCPTransport) RemovePeer(id uint64) {
	t.mu.Lock()
	p := t.peers[id]
	delete(t.peers, id)
	if _, ok := t.removed[id]; !ok && id != t.cfg.LocalID {
		t.removed[id] = struct{}{}
		t.removedOrder = append(t.removedOrder, id)
		if len(t.removedOrder) > removedMembersMax {
			delete(t.removed, t.removedOrder[0])
			t.removedOrder = t.removedOrder[1:]
		}
	}
	t.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

// reportRemoved passes on, once, that a peer refused this member as
// removed from the cluster.
func (t *TCPTransport) reportRemoved(by uint64) {
	if !t.removedReported.CompareAndSwap(false, true) {
		return
	}
	t.logf("member %x says this member was removed from the cluster; it must stop", by)
	if t.cfg.OnRemoved != nil {
		t.cfg.OnRemoved(by)
	}
}

// peer returns the peer with the given id, or nil, and whether the
// transport is closed.
func (t *TCPTransport) peer(id uint64) (*peer, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.peers[id], t.closed
}

// Send queues msgs for their destinations and returns without waiting on
// any peer. A message that cannot be queued (peer unknown, stream down,
// queue full, frame too large) is dropped and counted, and the peer is
// reported unreachable (raft retries). A MsgSnap goes out on a connection
// of its own; its outcome comes back through Handler.ReportSnapshot. The
// transport keeps msgs until they are written: the caller must not change
// them after Send.
func (t *TCPTransport) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		p, closed := t.peer(m.GetTo())
		if closed {
			return
		}
		if p == nil {
			t.counters.droppedUnknownPeer.Add(1)
			continue
		}
		if m.GetType() == raftpb.MessageType_MsgSnap {
			p.sendSnapshot(m)
			continue
		}
		p.enqueue(m)
	}
}

// Close stops every goroutine the transport started, closes its listeners
// and connections, and returns once they are gone. Reports still pending
// are not delivered. Close is idempotent.
func (t *TCPTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	listeners := mapKeys(t.listeners)
	conns := mapKeys(t.accepted)
	peers := make([]*peer, 0, len(t.peers))
	for _, p := range t.peers {
		peers = append(peers, p)
	}
	t.mu.Unlock()

	t.cancel()
	for _, l := range listeners {
		l.Close()
	}
	for _, p := range peers {
		p.stop()
	}
	for _, c := range conns {
		c.Close()
	}
	t.wg.Wait()
	return nil
}

func mapKeys[K comparable, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// PeerStatus describes the streams to and from one peer.
type PeerStatus struct {
	ID   uint64
	URLs []string
	// Active: the outbound message stream is up (the peer accepted our
	// hello, so it is alive and of our cluster) since ActiveSince.
	Active      bool
	ActiveSince time.Time
	URL         string // the URL the active stream was dialled on
	// InboundActive: the peer's message stream to us is up since
	// InboundSince.
	InboundActive bool
	InboundSince  time.Time
	// LastError is why the outbound stream is down; empty while it is up.
	LastError string
}

// PeerStatus returns the status of member id, and false if it is not a
// peer.
func (t *TCPTransport) PeerStatus(id uint64) (PeerStatus, bool) {
	p, _ := t.peer(id)
	if p == nil {
		return PeerStatus{}, false
	}
	return p.status(), true
}

// ActivePeers returns the IDs of the peers whose outbound stream is up, in
// ascending order (for strict reconfiguration checks: a quorum must be
// reachable before membership changes).
func (t *TCPTransport) ActivePeers() []uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var ids []uint64
	for id, p := range t.peers {
		if p.connected.Load() {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// PeerStats counts the traffic with one peer since it was added. Bytes
// include frame headers.
type PeerStats struct {
	ID                uint64
	MessagesSent      uint64
	BytesSent         uint64
	MessagesReceived  uint64
	BytesReceived     uint64
	MessagesDropped   uint64 // accepted by Send but never written
	SnapshotsSent     uint64 // acknowledged by the peer
	SnapshotsFailed   uint64 // sends that failed or were refused
	SnapshotsReceived uint64 // reassembled and handed to Process
}

// Stats counts the transport's traffic, for /metrics.
type Stats struct {
	Peers                      []PeerStats // in ascending ID order
	MessagesDroppedUnknownPeer uint64      // Send to an ID that is not a peer
	StreamsRefused             uint64      // inbound hellos refused (wrong cluster, member, version)
	ProtocolErrors             uint64      // connections closed for breaking the wire format
	ProcessErrors              uint64      // Handler.Process returned an error
	ConnectionsShed            uint64      // closed in their hello to make room at the inbound bound
	ConnectionsRefused         uint64      // refused at the inbound bound, every connection an admitted stream
}

// Stats returns the counters as of now.
func (t *TCPTransport) Stats() Stats {
	t.mu.RLock()
	s := Stats{Peers: make([]PeerStats, 0, len(t.peers))}
	for _, p := range t.peers {
		s.Peers = append(s.Peers, p.counters.snapshot(p.id))
	}
	t.mu.RUnlock()
	slices.SortFunc(s.Peers, func(a, b PeerStats) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	s.MessagesDroppedUnknownPeer = t.counters.droppedUnknownPeer.Load()
	s.StreamsRefused = t.counters.streamsRefused.Load()
	s.ProtocolErrors = t.counters.protocolErrors.Load()
	s.ProcessErrors = t.counters.processErrors.Load()
	s.ConnectionsShed = t.counters.connectionsShed.Load()
	s.ConnectionsRefused = t.counters.connectionsRefused.Load()
	return s
}

// sleepCtx waits d, or less if ctx ends first (then it returns false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

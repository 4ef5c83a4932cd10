package net

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	stdnet "net"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

const (
	// writeBatchMessagesMax bounds the queued messages written between two
	// flushes, so one flush (and its write deadline) covers a bounded
	// amount of data.
	writeBatchMessagesMax = 256
	// writeBufferBytes sizes the buffered writer of a stream.
	writeBufferBytes = 64 << 10
)

// errPeerStopped ends a stream whose peer was removed or whose transport
// closed.
var errPeerStopped = errors.New("peer removed or transport closed")

// peer is the outbound half for one member: a queue, the goroutine that
// dials and writes the message stream, and the bookkeeping for status and
// stats. Inbound streams from the member are attributed to it too.
type peer struct {
	t     *TCPTransport
	id    uint64
	queue chan *raftpb.Message // capacity Config.QueueMessagesMax

	ctx    context.Context // cancelled by stop
	cancel context.CancelFunc

	connected       atomic.Bool // the outbound message stream is up
	snapshotSending atomic.Bool // a MsgSnap to this peer is in flight
	counters        peerCounters

	mu           sync.Mutex
	stopped      bool
	urls         []string
	urlNext      int         // index in urls to dial first: the last that worked
	stream       stdnet.Conn // the outbound message stream; nil while down
	streamURL    string
	activeSince  time.Time
	inbound      stdnet.Conn // the peer's message stream to us; nil while down
	inboundSince time.Time
	lastError    string
	conns        map[stdnet.Conn]struct{} // every connection of this peer, closed by stop
}

type peerCounters struct {
	messagesSent      atomic.Uint64
	bytesSent         atomic.Uint64
	messagesReceived  atomic.Uint64
	bytesReceived     atomic.Uint64
	messagesDropped   atomic.Uint64
	snapshotsSent     atomic.Uint64
	snapshotsFailed   atomic.Uint64
	snapshotsReceived atomic.Uint64
}

func (c *peerCounters) snapshot(id uint64) PeerStats {
	return PeerStats{
		ID:                id,
		MessagesSent:      c.messagesSent.Load(),
		BytesSent:         c.bytesSent.Load(),
		MessagesReceived:  c.messagesReceived.Load(),
		BytesReceived:     c.bytesReceived.Load(),
		MessagesDropped:   c.messagesDropped.Load(),
		SnapshotsSent:     c.snapshotsSent.Load(),
		SnapshotsFailed:   c.snapshotsFailed.Load(),
		SnapshotsReceived: c.snapshotsReceived.Load(),
	}
}

func newPeer(t *TCPTransport, id uint64, urls []string) *peer {
	ctx, cancel := context.WithCancel(t.ctx)
	return &peer{
		t:      t,
		id:     id,
		queue:  make(chan *raftpb.Message, t.cfg.QueueMessagesMax),
		ctx:    ctx,
		cancel: cancel,
		urls:   slices.Clone(urls),
		conns:  map[stdnet.Conn]struct{}{},
	}
}

func (p *peer) logf(format string, args ...any) {
	p.t.logf(fmt.Sprintf("peer %x: ", p.id)+format, args...)
}

// stop ends everything of this peer: waits, dials and connections.
func (p *peer) stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	conns := mapKeys(p.conns)
	p.mu.Unlock()
	p.cancel()
	for _, c := range conns {
		c.Close()
	}
}

// track registers conn to be closed by stop; false (conn closed) if the
// peer is already stopped.
func (p *peer) track(conn stdnet.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		conn.Close()
		return false
	}
	p.conns[conn] = struct{}{}
	return true
}

// release closes conn and forgets it.
func (p *peer) release(conn stdnet.Conn) {
	conn.Close()
	p.mu.Lock()
	delete(p.conns, conn)
	p.mu.Unlock()
}

func (p *peer) setURLs(urls []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if slices.Equal(p.urls, urls) {
		return
	}
	p.urls = slices.Clone(urls)
	p.urlNext = 0
	if p.stream != nil && !slices.Contains(urls, p.streamURL) {
		// The writer sees the closed stream and redials the new URLs.
		p.stream.Close()
	}
}

func (p *peer) status() PeerStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PeerStatus{
		ID:            p.id,
		URLs:          slices.Clone(p.urls),
		Active:        p.stream != nil,
		ActiveSince:   p.activeSince,
		URL:           p.streamURL,
		InboundActive: p.inbound != nil,
		InboundSince:  p.inboundSince,
		LastError:     p.lastError,
	}
}

// enqueue queues m for the stream writer, or drops it: while the stream is
// down (queued messages would be stale by the time it is back, and raft
// resends anyway) and when the queue is full (the peer is slower than the
// leader; it must not hold the leader back).
func (p *peer) enqueue(m *raftpb.Message) {
	if !p.connected.Load() {
		p.drop(1)
		return
	}
	select {
	case p.queue <- m:
	default:
		p.drop(1)
	}
}

// drop counts n lost messages and reports the peer unreachable.
func (p *peer) drop(n int) {
	if n == 0 {
		return
	}
	p.counters.messagesDropped.Add(uint64(n))
	p.t.reports.reportUnreachable(p.id)
}

// drainQueue drops whatever is queued (at most the queue's capacity).
func (p *peer) drainQueue() {
	dropped := 0
	for range cap(p.queue) {
		if _, ok := tryReceive(p.queue); !ok {
			break
		}
		dropped++
	}
	p.drop(dropped)
}

// run keeps the outbound message stream up until the peer stops: dial,
// write until the stream fails, back off, dial again. The backoff doubles
// from BackoffMin to BackoffMax while dials fail or streams die young, and
// is jittered so that members do not redial in lockstep after a partition
// heals.
func (p *peer) run() {
	cfg := &p.t.cfg
	backoff := cfg.BackoffMin
	for {
		conn, replies, url, err := p.dial(StreamMessages)
		if err == nil {
			began := time.Now()
			err = p.serveStream(conn, replies, url)
			if time.Since(began) >= cfg.BackoffMax {
				backoff = cfg.BackoffMin
			}
		}
		if p.ctx.Err() != nil {
			return
		}
		p.noteError(err)
		if !sleepCtx(p.ctx, jittered(backoff)) {
			return
		}
		backoff = min(2*backoff, cfg.BackoffMax)
	}
}

// jittered returns a duration uniformly in [d/2, d].
func jittered(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// noteError records why the stream is down and logs it when the reason
// changes, so a peer that stays down logs once, not once per redial.
func (p *peer) noteError(err error) {
	p.mu.Lock()
	changed := err.Error() != p.lastError
	p.lastError = err.Error()
	p.mu.Unlock()
	if changed {
		p.logf("message stream down: %v", err)
	}
}

// serveStream makes conn the peer's stream, writes to it until it fails,
// then tears it down. It returns why the stream ended.
func (p *peer) serveStream(conn stdnet.Conn, replies *FrameReader, url string) error {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		p.release(conn)
		return errPeerStopped
	}
	p.stream, p.streamURL, p.activeSince, p.lastError = conn, url, time.Now(), ""
	p.mu.Unlock()
	p.connected.Store(true)
	p.logf("message stream to %s up", url)

	err := p.writeStream(conn, replies)

	p.connected.Store(false)
	p.mu.Lock()
	p.stream, p.streamURL, p.activeSince = nil, "", time.Time{}
	p.mu.Unlock()
	p.release(conn)
	if p.ctx.Err() != nil {
		return errPeerStopped
	}
	// What was queued for the dead stream is lost; raft resends.
	p.drainQueue()
	p.t.reports.reportUnreachable(p.id)
	return fmt.Errorf("message stream to %s lost: %w", url, err)
}

// writeStream writes queued messages, and a keepalive every
// IdleTimeout/keepalivesPerIdle, until the connection fails or the peer
// stops.
func (p *peer) writeStream(conn stdnet.Conn, replies *FrameReader) error {
	idleTimeout := p.t.cfg.IdleTimeout
	ended := make(chan error, 1)
	if !p.t.spawn(func() { ended <- watchKeepalives(conn, replies, idleTimeout) }) {
		return ErrClosed
	}
	bw := bufio.NewWriterSize(conn, writeBufferBytes)
	keepalive := time.NewTicker(idleTimeout / keepalivesPerIdle)
	defer keepalive.Stop()
	var frame []byte
	for {
		select {
		case <-p.ctx.Done():
			return errPeerStopped
		case err := <-ended:
			return err
		case m := <-p.queue:
			if err := p.writeBatch(conn, bw, m, &frame); err != nil {
				return err
			}
		case <-keepalive.C:
			// Sent even while messages flow: the acceptor echoes each one,
			// and the echoes are how this side learns the peer is alive.
			conn.SetWriteDeadline(time.Now().Add(p.t.cfg.WriteTimeout))
			bw.Write(keepaliveFrame)
			if err := bw.Flush(); err != nil {
				return fmt.Errorf("write keepalive: %w", err)
			}
		}
	}
}

// keepaliveFrame is the whole of a keepalive frame: a header, no payload.
var keepaliveFrame = appendFrameHeader(nil, FrameKeepalive, 0)

// watchKeepalives reads the acceptor's side of a message stream, which
// carries only the echoes of our keepalives, and returns why the stream
// ended: the peer closed it (it restarted, or refused a frame), or no echo
// came for idleTimeout. A peer whose host died or that sits behind a
// partition sends no FIN and, while our writes still fit in the kernel's
// buffers, no error either; only the missing echoes tell.
func watchKeepalives(conn stdnet.Conn, replies *FrameReader, idleTimeout time.Duration) error {
	for {
		conn.SetReadDeadline(time.Now().Add(idleTimeout))
		kind, payload, err := replies.ReadFrame()
		switch {
		case errors.Is(err, io.EOF):
			return errors.New("closed by the peer")
		case errors.Is(err, os.ErrDeadlineExceeded):
			return fmt.Errorf("no keepalive echo from the peer for %v", idleTimeout)
		case err != nil:
			return err
		case kind != FrameKeepalive || len(payload) != 0:
			return protocolErrorf("the acceptor sent a %s frame of %d bytes on a message stream, want only keepalives", kind, len(payload))
		}
	}
}

// writeBatch writes first and whatever else is queued (up to
// writeBatchMessagesMax), then flushes, all under one write deadline. The
// frame buffer is reused across batches.
func (p *peer) writeBatch(conn stdnet.Conn, bw *bufio.Writer, first *raftpb.Message, frame *[]byte) error {
	cfg := &p.t.cfg
	conn.SetWriteDeadline(time.Now().Add(cfg.WriteTimeout))
	written, writtenBytes := 0, 0
	m := first
	for batched := 1; ; batched++ {
		buf, err := appendMessageFrame((*frame)[:0], m)
		*frame = buf
		switch {
		case err != nil:
			p.logf("dropping %s: %v", m.GetType(), err)
			p.drop(1)
		case len(buf)-FrameHeaderBytes > cfg.FrameBytesMax:
			// A configuration error (FrameBytesMax below the largest raft
			// message), loud on purpose: raft will keep resending it.
			p.logf("dropping %s (index %d): %d bytes exceed FrameBytesMax %d", m.GetType(), m.GetIndex(), len(buf)-FrameHeaderBytes, cfg.FrameBytesMax)
			p.drop(1)
		default:
			if _, err := bw.Write(buf); err != nil {
				p.drop(written + 1)
				return fmt.Errorf("write: %w", err)
			}
			written++
			writtenBytes += len(buf)
		}
		if batched == writeBatchMessagesMax {
			break
		}
		next, more := tryReceive(p.queue)
		if !more {
			break
		}
		m = next
	}
	if cap(*frame) > frameBufferRetainBytesMax {
		*frame = nil
	}
	if err := bw.Flush(); err != nil {
		p.drop(written)
		return fmt.Errorf("write: %w", err)
	}
	p.counters.messagesSent.Add(uint64(written))
	p.counters.bytesSent.Add(uint64(writtenBytes))
	return nil
}

func tryReceive[T any](c chan T) (T, bool) {
	select {
	case v := <-c:
		return v, true
	default:
		var zero T
		return zero, false
	}
}

// dial opens a stream of the given kind to the peer: each URL in turn,
// starting with the last that worked, until one accepts the hello. The
// connection is tracked (stop closes it); the caller releases it.
func (p *peer) dial(kind StreamKind) (stdnet.Conn, *FrameReader, string, error) {
	p.mu.Lock()
	urls, first := slices.Clone(p.urls), p.urlNext
	p.mu.Unlock()
	if len(urls) == 0 {
		return nil, nil, "", errors.New("no peer URLs")
	}
	hello := Hello{Version: ProtocolVersion, Stream: kind, ClusterID: p.t.cfg.ClusterID, From: p.t.cfg.LocalID, To: p.id}
	var errs []error
	for i := range urls {
		index := (first + i) % len(urls)
		conn, replies, err := p.dialHello(urls[index], hello)
		if err != nil {
			if p.ctx.Err() != nil {
				return nil, nil, "", errPeerStopped
			}
			if errors.Is(err, ErrRemoved) {
				p.t.reportRemoved(p.id)
			}
			errs = append(errs, fmt.Errorf("%s: %w", urls[index], err))
			continue
		}
		p.mu.Lock()
		if slices.Equal(p.urls, urls) {
			p.urlNext = index
		}
		p.mu.Unlock()
		return conn, replies, urls[index], nil
	}
	return nil, nil, "", errors.Join(errs...)
}

// dialHello connects to rawURL and exchanges the hello, all within
// DialTimeout. It returns the connection (tracked) and the reader for the
// acceptor's later frames.
func (p *peer) dialHello(rawURL string, hello Hello) (stdnet.Conn, *FrameReader, error) {
	cfg := &p.t.cfg
	conn, err := dialPeerURL(p.ctx, rawURL, cfg.DialTimeout, cfg.TLS)
	if err != nil {
		return nil, nil, err
	}
	if !p.track(conn) {
		return nil, nil, errPeerStopped
	}
	replies, err := exchangeHello(conn, hello, cfg.DialTimeout)
	if err != nil {
		p.release(conn)
		return nil, nil, err
	}
	return conn, replies, nil
}

// exchangeHello writes the connection preamble and hello on conn and reads
// the acceptor's reply, which must accept and name the member and cluster
// the hello asked for.
func exchangeHello(conn stdnet.Conn, hello Hello, timeout time.Duration) (*FrameReader, error) {
	conn.SetDeadline(time.Now().Add(timeout))
	opening := append([]byte(connectionMagic), appendFrameHeader(nil, FrameHello, helloPayloadBytes)...)
	if _, err := conn.Write(hello.AppendPayload(opening)); err != nil {
		return nil, fmt.Errorf("write hello: %w", err)
	}
	replies := NewFrameReader(conn, controlFrameBytesMax)
	kind, payload, err := replies.ReadFrame()
	if err != nil {
		return nil, fmt.Errorf("read hello reply: %w", err)
	}
	if kind != FrameHelloReply {
		return nil, protocolErrorf("answered the hello with a %s frame", kind)
	}
	reply, err := DecodeHelloReply(payload)
	if err != nil {
		return nil, err
	}
	switch reply.Status {
	case HelloRemoved:
		return nil, fmt.Errorf("%w: member %x refused the %s stream: %s", ErrRemoved, reply.MemberID, hello.Stream, reply.Reason)
	case HelloRefused:
		return nil, fmt.Errorf("member %x refused the %s stream: %s", reply.MemberID, hello.Stream, reply.Reason)
	}
	if reply.ClusterID != hello.ClusterID || reply.MemberID != hello.To {
		return nil, fmt.Errorf("answered as member %x of cluster %x, expected member %x of cluster %x",
			reply.MemberID, reply.ClusterID, hello.To, hello.ClusterID)
	}
	conn.SetDeadline(time.Time{})
	return replies, nil
}

// parsePeerURL checks a peer URL and returns its scheme and host:port.
func parsePeerURL(rawURL string) (scheme, hostPort string, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", "", fmt.Errorf("peer URL %q: %w", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", "", fmt.Errorf("peer URL %q: scheme %q, want http or https", rawURL, u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return "", "", fmt.Errorf("peer URL %q: want host:port", rawURL)
	}
	return u.Scheme, u.Host, nil
}

// dialPeerURL connects to a peer URL: TCP for http, TLS with tlsConfig for
// https (the server name defaults to the URL's host).
func dialPeerURL(ctx context.Context, rawURL string, timeout time.Duration, tlsConfig *tls.Config) (stdnet.Conn, error) {
	scheme, hostPort, err := parsePeerURL(rawURL)
	if err != nil {
		return nil, err
	}
	dialer := &stdnet.Dialer{Timeout: timeout}
	if scheme == "http" {
		return dialer.DialContext(ctx, "tcp", hostPort)
	}
	if tlsConfig == nil {
		return nil, errors.New("https peer URL, but the transport has no TLS configuration")
	}
	tlsDialer := &tls.Dialer{NetDialer: dialer, Config: tlsConfig}
	return tlsDialer.DialContext(ctx, "tcp", hostPort)
}

package net

import (
	"errors"
	"fmt"
	"io"
	stdnet "net"
	"os"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// serveConn runs an accepted connection: preamble and hello within
// DialTimeout, admission, then the stream. The caller closes conn.
func (t *TCPTransport) serveConn(conn stdnet.Conn) {
	remote := conn.RemoteAddr().String()
	conn.SetDeadline(time.Now().Add(t.cfg.DialTimeout))
	var magic [len(connectionMagic)]byte
	if _, err := io.ReadFull(conn, magic[:]); err != nil {
		t.logf("connection from %s ended before its preamble: %v", remote, err)
		return
	}
	if string(magic[:]) != connectionMagic {
		t.counters.protocolErrors.Add(1)
		t.warnf("connection from %s is not a noded peer stream (it opened with %q); closing it", remote, magic[:])
		return
	}
	// Until the hello is admitted, frames are held to the size of a hello.
	frames := NewFrameReader(conn, controlFrameBytesMax)
	hello, err := readHello(frames)
	if err != nil {
		if errors.Is(err, ErrProtocol) {
			t.warnf("connection from %s: %v; closing it", remote, err)
			t.counters.protocolErrors.Add(1)
			t.writeRefusal(conn, HelloRefused, err.Error())
			return
		}
		t.logf("connection from %s: %v; closing it", remote, err)
		return
	}
	p, status, reason := t.admit(hello)
	if status != HelloAccepted {
		t.counters.streamsRefused.Add(1)
		key := fmt.Sprintf("%x/%x/%s", hello.ClusterID, hello.From, reason)
		if t.refusals.shouldLog(key, time.Now()) {
			t.warnf("refused %s stream from %s claiming member %x of cluster %x: %s", hello.Stream, remote, hello.From, hello.ClusterID, reason)
		}
		t.writeRefusal(conn, status, reason)
		return
	}
	if !p.track(conn) {
		return
	}
	defer p.release(conn)
	t.mu.Lock()
	t.leaveHelloLocked(conn)
	t.mu.Unlock()
	if err := t.writeHelloReply(conn, HelloAccepted, ""); err != nil {
		t.logf("%s stream from peer %x at %s: write hello reply: %v", hello.Stream, hello.From, remote, err)
		return
	}
	conn.SetDeadline(time.Time{})
	frames.frameBytesMax = t.cfg.FrameBytesMax

	switch hello.Stream {
	case StreamMessages:
		err = t.receiveMessages(conn, frames, p)
	case StreamSnapshot:
		err = t.receiveSnapshot(conn, frames, p)
	}
	switch {
	case err == nil, p.ctx.Err() != nil:
		// Done, or the peer was removed or the transport closed.
	case errors.Is(err, ErrProtocol):
		t.counters.protocolErrors.Add(1)
		t.warnf("%s stream from peer %x at %s: %v; closing it", hello.Stream, hello.From, remote, err)
	default:
		t.logf("%s stream from peer %x at %s ended: %v", hello.Stream, hello.From, remote, err)
	}
}

// readHello reads the first frame, which must be a hello.
func readHello(frames *FrameReader) (Hello, error) {
	kind, payload, err := frames.ReadFrame()
	if err != nil {
		return Hello{}, fmt.Errorf("read hello: %w", err)
	}
	if kind != FrameHello {
		return Hello{}, protocolErrorf("first frame is %s, want hello", kind)
	}
	return DecodeHello(payload)
}

// admit decides whether a hello may open a stream here. It returns the peer
// it comes from, or the verdict and reason for refusing it.
func (t *TCPTransport) admit(h Hello) (*peer, HelloStatus, string) {
	local := t.cfg.LocalID
	switch {
	case h.ClusterID != t.cfg.ClusterID:
		return nil, HelloRefused, fmt.Sprintf("cluster ID mismatch: member %x belongs to cluster %x, the dialer to cluster %x (a data directory of another cluster?)", local, t.cfg.ClusterID, h.ClusterID)
	case h.To != local:
		return nil, HelloRefused, fmt.Sprintf("stream addressed to member %x reached member %x (peer URLs mixed up?)", h.To, local)
	case h.From == local:
		return nil, HelloRefused, fmt.Sprintf("the dialer claims to be member %x, which is this member (duplicate member ID?)", h.From)
	case h.Stream != StreamMessages && h.Stream != StreamSnapshot:
		return nil, HelloRefused, fmt.Sprintf("unknown stream kind %d", uint8(h.Stream))
	}
	t.mu.RLock()
	p := t.peers[h.From]
	_, removed := t.removed[h.From]
	t.mu.RUnlock()
	switch {
	case removed:
		return nil, HelloRemoved, fmt.Sprintf("member %x was removed from the cluster", h.From)
	case p == nil:
		return nil, HelloRefused, fmt.Sprintf("member %x is not a peer of member %x (not added yet?)", h.From, local)
	}
	return p, HelloAccepted, ""
}

// writeRefusal tells the dialer why its hello was refused, so the log on
// its side says so too. Best effort: the connection closes next.
func (t *TCPTransport) writeRefusal(conn stdnet.Conn, status HelloStatus, reason string) {
	t.writeHelloReply(conn, status, reason)
}

// writeHelloReply writes this member's answer to a hello: the verdict, and
// the reason for a refusal (empty when accepted).
func (t *TCPTransport) writeHelloReply(conn stdnet.Conn, status HelloStatus, reason string) error {
	reply := HelloReply{Version: ProtocolVersion, Status: status, ClusterID: t.cfg.ClusterID, MemberID: t.cfg.LocalID, Reason: reason}
	_, err := conn.Write(AppendFrame(nil, FrameHelloReply, reply.AppendPayload(nil)))
	return err
}

// receiveMessages delivers a peer's message stream to the handler, in
// order, until the stream ends. A newer stream from the same peer (it
// redialled after a restart this side has not noticed) replaces this one.
func (t *TCPTransport) receiveMessages(conn stdnet.Conn, frames *FrameReader, p *peer) error {
	p.attachInbound(conn)
	defer p.detachInbound(conn)
	local := t.cfg.LocalID
	for {
		conn.SetReadDeadline(time.Now().Add(t.cfg.IdleTimeout))
		kind, payload, err := frames.ReadFrame()
		if err != nil {
			switch {
			case p.replacedInbound(conn):
				return errors.New("replaced by a newer stream from the same peer")
			case errors.Is(err, io.EOF):
				return errors.New("closed by the peer")
			case errors.Is(err, os.ErrDeadlineExceeded):
				return fmt.Errorf("no frame for %v (peer dead or partitioned)", t.cfg.IdleTimeout)
			}
			return err
		}
		switch kind {
		case FrameKeepalive:
			if len(payload) != 0 {
				return protocolErrorf("keepalive with a %d-byte payload", len(payload))
			}
			// The echo tells the dialer this member is alive and reading.
			conn.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
			if _, err := conn.Write(keepaliveFrame); err != nil {
				return fmt.Errorf("echo keepalive: %w", err)
			}
		case FrameMessage:
			m, err := DecodeMessage(payload)
			if err != nil {
				return err
			}
			switch {
			case m.GetType() == raftpb.MessageType_MsgSnap:
				return protocolErrorf("MsgSnap on a message stream; snapshots have streams of their own")
			case m.GetTo() != local:
				return protocolErrorf("%s addressed to member %x on a stream to member %x", m.GetType(), m.GetTo(), local)
			case m.GetFrom() != p.id:
				return protocolErrorf("%s from member %x on a stream from member %x", m.GetType(), m.GetFrom(), p.id)
			}
			p.counters.messagesReceived.Add(1)
			p.counters.bytesReceived.Add(uint64(FrameHeaderBytes + len(payload)))
			if err := t.handler.Process(m); err != nil {
				// The handler knows why it refused; counting is enough here.
				t.counters.processErrors.Add(1)
			}
		default:
			return protocolErrorf("unexpected %s frame on a message stream", kind)
		}
	}
}

// attachInbound makes conn the peer's inbound message stream, closing the
// one it replaces.
func (p *peer) attachInbound(conn stdnet.Conn) {
	p.mu.Lock()
	previous := p.inbound
	p.inbound, p.inboundSince = conn, time.Now()
	p.mu.Unlock()
	if previous != nil {
		previous.Close()
	}
}

// replacedInbound reports whether a newer inbound stream took conn's place.
func (p *peer) replacedInbound(conn stdnet.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inbound != conn
}

func (p *peer) detachInbound(conn stdnet.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inbound == conn {
		p.inbound, p.inboundSince = nil, time.Time{}
	}
}

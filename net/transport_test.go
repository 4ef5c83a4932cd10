package net

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	stdnet "net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Three members each send a numbered series to both others; every member
// must receive each series whole and in order (one stream per pair keeps
// order; the queue is large enough that nothing is dropped).
func TestThreeMembersExchangeMessagesInOrder(t *testing.T) {
	const messagesPerPair = 500
	var members []*member
	for id := uint64(1); id <= 3; id++ {
		members = append(members, startMember(t, testConfig(id), "127.0.0.1:0"))
	}
	connectAll(t, members...)

	for index := uint64(1); index <= messagesPerPair; index++ {
		for _, from := range members {
			var batch []*raftpb.Message
			for _, to := range members {
				if to != from {
					batch = append(batch, appMessage(from.id, to.id, index, 64))
				}
			}
			from.transport.Send(batch)
		}
	}

	for _, to := range members {
		for _, from := range members {
			if from == to {
				continue
			}
			waitFor(t, fmt.Sprintf("%d messages %x->%x", messagesPerPair, from.id, to.id), func() bool {
				return len(to.handler.received(from.id)) >= messagesPerPair
			})
			got := to.handler.received(from.id)
			if len(got) != messagesPerPair {
				t.Fatalf("%x->%x: %d messages, want %d", from.id, to.id, len(got), messagesPerPair)
			}
			for i, m := range got {
				if m.GetIndex() != uint64(i+1) || m.GetTo() != to.id || m.GetType() != raftpb.MessageType_MsgApp {
					t.Fatalf("%x->%x: message %d is %s index %d to %x, want MsgApp index %d to %x",
						from.id, to.id, i, m.GetType(), m.GetIndex(), m.GetTo(), i+1, to.id)
				}
				if len(m.GetEntries()) != 1 || len(m.GetEntries()[0].GetData()) != 64 {
					t.Fatalf("%x->%x: message %d lost its entry", from.id, to.id, i)
				}
			}
		}
	}
	for _, m := range members {
		stats := m.transport.Stats()
		for _, ps := range stats.Peers {
			if ps.MessagesSent != messagesPerPair || ps.MessagesReceived != messagesPerPair || ps.MessagesDropped != 0 {
				t.Errorf("member %x, peer %x: stats %+v, want %d sent and received, none dropped", m.id, ps.ID, ps, messagesPerPair)
			}
			if ps.BytesSent == 0 || ps.BytesReceived == 0 {
				t.Errorf("member %x, peer %x: no bytes counted: %+v", m.id, ps.ID, ps)
			}
		}
		if got := m.transport.ActivePeers(); len(got) != 2 {
			t.Errorf("member %x: active peers %v, want the other two", m.id, got)
		}
	}
}

// A peer that restarts on the same address is redialled and the stream
// carries messages again.
func TestStreamReconnectsAfterPeerRestart(t *testing.T) {
	a := startMember(t, testConfig(1), "127.0.0.1:0")
	b := startMember(t, testConfig(2), "127.0.0.1:0")
	connectAll(t, a, b)
	a.transport.Send([]*raftpb.Message{appMessage(1, 2, 1, 8)})
	waitFor(t, "first message", func() bool { return len(b.handler.received(1)) == 1 })

	addr := strings.TrimPrefix(b.url, "http://")
	b.transport.Close()
	waitFor(t, "member 1 notices the stream to 2 is lost", func() bool {
		status, _ := a.transport.PeerStatus(2)
		return !status.Active && status.LastError != ""
	})
	waitFor(t, "member 1 reports 2 unreachable", func() bool { return a.handler.unreachableCount(2) > 0 })

	restarted := startMember(t, testConfig(2), addr)
	restarted.transport.AddPeer(1, []string{a.url})
	waitActive(t, a, 2)
	a.transport.Send([]*raftpb.Message{appMessage(1, 2, 2, 8)})
	waitFor(t, "message after restart", func() bool { return len(restarted.handler.received(1)) == 1 })
	if got := restarted.handler.received(1)[0].GetIndex(); got != 2 {
		t.Fatalf("after restart got index %d, want 2", got)
	}
	if !a.logs.contains("message stream down") {
		t.Errorf("member 1 did not log the lost stream; log:\n%s", a.logs)
	}
}

// Send never waits on a peer that is down: every message is dropped and
// counted, the peer reported unreachable, and Send returns at once.
func TestSendDropsForUnreachablePeer(t *testing.T) {
	closed, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + closed.Addr().String()
	closed.Close()

	a := startMember(t, testConfig(1), "127.0.0.1:0")
	a.transport.AddPeer(2, []string{deadURL})
	waitFor(t, "a dial to the dead peer fails", func() bool {
		status, _ := a.transport.PeerStatus(2)
		return status.LastError != ""
	})
	const messages = 10000
	began := time.Now()
	for i := range messages {
		a.transport.Send([]*raftpb.Message{appMessage(1, 2, uint64(i), 16)})
	}
	if elapsed := time.Since(began); elapsed > 5*time.Second {
		t.Fatalf("sending %d messages to a dead peer took %v", messages, elapsed)
	}
	stats := a.transport.Stats()
	if len(stats.Peers) != 1 || stats.Peers[0].MessagesDropped != messages {
		t.Fatalf("stats %+v, want %d dropped for peer 2", stats.Peers, messages)
	}
	waitFor(t, "peer 2 reported unreachable", func() bool { return a.handler.unreachableCount(2) > 0 })
	// Reports are coalesced, not one per dropped message.
	if n := a.handler.unreachableCount(2); n >= messages {
		t.Errorf("%d unreachable reports for %d drops; want them coalesced", n, messages)
	}
	status, _ := a.transport.PeerStatus(2)
	if !strings.Contains(status.LastError, "connection refused") {
		t.Errorf("LastError %q, want it to name the refused connection", status.LastError)
	}

	a.transport.Send([]*raftpb.Message{appMessage(1, 9, 1, 16)})
	if got := a.transport.Stats().MessagesDroppedUnknownPeer; got != 1 {
		t.Errorf("MessagesDroppedUnknownPeer = %d, want 1", got)
	}
}

// A peer that accepts the stream and then stops reading (wedged, or its
// kernel buffers full) must not stall Send: the queue fills, Send drops,
// and the write deadline eventually tears the stream down.
func TestSendDoesNotStallOnWedgedPeer(t *testing.T) {
	wedged := startWedgedPeer(t, 2)
	cfg := testConfig(1)
	cfg.QueueMessagesMax = 64
	cfg.WriteTimeout = 500 * time.Millisecond
	a := startMember(t, cfg, "127.0.0.1:0")
	a.transport.AddPeer(2, []string{wedged.url})
	waitActive(t, a, 2)

	big := appMessage(1, 2, 1, 64<<10)
	const messages = 4000 // 256 MiB: far beyond what loopback buffers hold
	began := time.Now()
	for range messages {
		a.transport.Send([]*raftpb.Message{big})
	}
	if elapsed := time.Since(began); elapsed > 5*time.Second {
		t.Fatalf("Send to a wedged peer took %v for %d messages", elapsed, messages)
	}
	waitFor(t, "drops counted", func() bool {
		s := a.transport.Stats().Peers[0]
		return s.MessagesDropped > 0
	})
	waitFor(t, "peer 2 reported unreachable", func() bool { return a.handler.unreachableCount(2) > 0 })
	// The status error is cleared again when the redial succeeds (the
	// wedged peer answers hellos), so look for the logged loss instead.
	waitFor(t, "the write deadline tears down the stream", func() bool { return a.logs.contains("i/o timeout") })
	s := a.transport.Stats().Peers[0]
	if s.MessagesSent+s.MessagesDropped > messages {
		t.Errorf("sent %d + dropped %d exceeds the %d messages given to Send", s.MessagesSent, s.MessagesDropped, messages)
	}
}

type wedgedPeer struct {
	url string
}

// startWedgedPeer accepts streams as member id, answers every hello, and
// never reads again until the test ends.
func startWedgedPeer(t *testing.T, id uint64) *wedgedPeer {
	t.Helper()
	l, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []stdnet.Conn
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			conn.SetDeadline(time.Now().Add(waitTimeout))
			magic := make([]byte, len(connectionMagic))
			io.ReadFull(conn, magic)
			hello, err := readHello(NewFrameReader(conn, controlFrameBytesMax))
			if err != nil {
				continue
			}
			reply := HelloReply{Version: ProtocolVersion, Status: HelloAccepted, ClusterID: hello.ClusterID, MemberID: id}
			conn.Write(AppendFrame(nil, FrameHelloReply, reply.AppendPayload(nil)))
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-acceptDone
		mu.Lock()
		defer mu.Unlock()
		for _, conn := range conns {
			conn.Close()
		}
	})
	return &wedgedPeer{url: "http://" + l.Addr().String()}
}

// A member of another cluster (a data directory from elsewhere) is refused
// in both directions, with the reason logged on both sides.
func TestWrongClusterIsRefused(t *testing.T) {
	a := startMember(t, testConfig(1), "127.0.0.1:0")
	otherCfg := testConfig(2)
	otherCfg.ClusterID = testClusterID + 1
	other := startMember(t, otherCfg, "127.0.0.1:0")
	a.transport.AddPeer(2, []string{other.url})
	other.transport.AddPeer(1, []string{a.url})

	waitFor(t, "member 1 is refused by member 2", func() bool {
		status, _ := a.transport.PeerStatus(2)
		return strings.Contains(status.LastError, "cluster ID mismatch")
	})
	waitFor(t, "member 2 is refused by member 1", func() bool {
		status, _ := other.transport.PeerStatus(1)
		return strings.Contains(status.LastError, "cluster ID mismatch")
	})
	for _, m := range []*member{a, other} {
		if !m.logs.contains("refused message stream") || !m.logs.contains("cluster ID mismatch") {
			t.Errorf("member %x did not log the refusal; log:\n%s", m.id, m.logs)
		}
		if m.transport.Stats().StreamsRefused == 0 {
			t.Errorf("member %x counted no refused stream", m.id)
		}
		if len(m.transport.ActivePeers()) != 0 {
			t.Errorf("member %x has active peers %v across clusters", m.id, m.transport.ActivePeers())
		}
	}
	a.transport.Send([]*raftpb.Message{appMessage(1, 2, 1, 8)})
	if n := len(other.handler.received(1)); n != 0 {
		t.Fatalf("a message crossed clusters (%d delivered)", n)
	}
}

// rawPeerConn dials a member as a hand-written peer would, to feed it bytes
// the real transport never sends.
func rawPeerConn(t *testing.T, m *member) stdnet.Conn {
	t.Helper()
	conn, err := stdnet.Dial("tcp", strings.TrimPrefix(m.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// expectClosedByPeer reads until the member closes conn; a timeout means
// it kept a connection it should have dropped.
func expectClosedByPeer(t *testing.T, conn stdnet.Conn, what string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(waitTimeout))
	_, err := io.Copy(io.Discard, conn)
	var netErr stdnet.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("%s: the member kept the connection open", what)
	}
}

// Garbage on the peer port, before or after a valid hello, closes the
// connection (never a panic) and leaves the member serving real peers.
func TestGarbageIsDisconnectedWithoutPanic(t *testing.T) {
	a := startMember(t, testConfig(1), "127.0.0.1:0")
	b := startMember(t, testConfig(2), "127.0.0.1:0")
	// Member 3 is a peer of 1 that only the hand-written connections speak
	// for; its URL leads nowhere.
	a.transport.AddPeer(3, []string{"http://127.0.0.1:1"})

	hello := func(from, to uint64) []byte {
		h := Hello{Version: ProtocolVersion, Stream: StreamMessages, ClusterID: testClusterID, From: from, To: to}
		return AppendFrame([]byte(connectionMagic), FrameHello, h.AppendPayload(nil))
	}
	validMessage, err := AppendMessagePayload(nil, appMessage(3, 1, 1, 8))
	if err != nil {
		t.Fatal(err)
	}
	misaddressed, err := AppendMessagePayload(nil, appMessage(3, 7, 1, 8))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		accepted bool // a valid hello comes first
		bytes    []byte
	}{
		{"http request", false, []byte("GET /members HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"random bytes", false, bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 64)},
		{"magic then oversized frame", false, append([]byte(connectionMagic), 0xff, 0xff, 0xff, 0xff, byte(FrameHello))},
		{"magic then short hello", false, AppendFrame([]byte(connectionMagic), FrameHello, []byte{0, 1, 1})},
		{"magic then message before hello", false, AppendFrame([]byte(connectionMagic), FrameMessage, validMessage)},
		{"unknown frame kind", true, []byte{0, 0, 0, 1, 99, 0}},
		{"oversized frame", true, []byte{0xff, 0xff, 0xff, 0xff, byte(FrameMessage)}},
		{"undecodable message", true, AppendFrame(nil, FrameMessage, []byte{0xff, 0xff, 0xff})},
		{"message addressed to another member", true, AppendFrame(nil, FrameMessage, misaddressed)},
		{"keepalive with payload", true, AppendFrame(nil, FrameKeepalive, []byte{1})},
		{"hello again", true, hello(3, 1)[len(connectionMagic):]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := a.transport.Stats().ProtocolErrors
			conn := rawPeerConn(t, a)
			if c.accepted {
				conn.Write(hello(3, 1))
				replies := NewFrameReader(conn, controlFrameBytesMax)
				conn.SetReadDeadline(time.Now().Add(waitTimeout))
				kind, payload, err := replies.ReadFrame()
				if err != nil || kind != FrameHelloReply {
					t.Fatalf("no hello reply: %v %v", kind, err)
				}
				if reply, err := DecodeHelloReply(payload); err != nil || reply.Status != HelloAccepted {
					t.Fatalf("hello refused: %+v %v", reply, err)
				}
				// A valid message first: the stream works until the garbage.
				conn.Write(AppendFrame(nil, FrameMessage, validMessage))
			}
			conn.Write(c.bytes)
			expectClosedByPeer(t, conn, c.name)
			waitFor(t, "the protocol error is counted", func() bool { return a.transport.Stats().ProtocolErrors > before })
		})
	}
	if got := len(a.handler.received(3)); got != 6 {
		t.Errorf("member 1 delivered %d valid messages from the hand-written peer, want 6", got)
	}
	if !a.logs.contains("is not a noded peer stream") {
		t.Errorf("no log line for the HTTP request; log:\n%s", a.logs)
	}
	// Member 1 still serves a real peer.
	connectAll(t, a, b)
	b.transport.Send([]*raftpb.Message{appMessage(2, 1, 1, 8)})
	waitFor(t, "a message from a real peer after the garbage", func() bool { return len(a.handler.received(2)) == 1 })
}

// A hello for another member, or from a member that is not a peer, is
// refused with the reason in the reply.
func TestHelloRefusals(t *testing.T) {
	a := startMember(t, testConfig(1), "127.0.0.1:0")
	a.transport.AddPeer(3, []string{"http://127.0.0.1:1"})
	a.transport.RemovePeer(6) // removed before this start, as a restarted server declares
	cases := []struct {
		name   string
		hello  Hello
		reason string
	}{
		{"addressed to another member", Hello{Stream: StreamMessages, ClusterID: testClusterID, From: 3, To: 4}, "addressed to member 4"},
		{"unknown member", Hello{Stream: StreamMessages, ClusterID: testClusterID, From: 5, To: 1}, "member 5 is not a peer"},
		{"removed member", Hello{Stream: StreamMessages, ClusterID: testClusterID, From: 6, To: 1}, "member 6 was removed"},
		{"own ID", Hello{Stream: StreamMessages, ClusterID: testClusterID, From: 1, To: 1}, "which is this member"},
		{"other cluster", Hello{Stream: StreamMessages, ClusterID: 77, From: 3, To: 1}, "cluster ID mismatch"},
		{"unknown stream kind", Hello{Stream: 9, ClusterID: testClusterID, From: 3, To: 1}, "unknown stream kind"},
		{"future protocol", Hello{Version: ProtocolVersion + 1, Stream: StreamMessages, ClusterID: testClusterID, From: 3, To: 1}, "protocol version 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.hello.Version == 0 {
				c.hello.Version = ProtocolVersion
			}
			conn := rawPeerConn(t, a)
			_, err := exchangeHello(conn, c.hello, waitTimeout)
			if err == nil || !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("exchangeHello: %v, want a refusal saying %q", err, c.reason)
			}
			expectClosedByPeer(t, conn, c.name)
		})
	}
}

// Removing a peer closes its streams and answers its redials with
// HelloRemoved, so the removed member learns it is gone (once); a member
// that was never a peer is refused without that verdict.
func TestRemovedPeerIsToldItWasRemoved(t *testing.T) {
	a := startMember(t, testConfig(1), "127.0.0.1:0")
	removedBy := make(chan uint64, 4)
	cfg := testConfig(2)
	cfg.OnRemoved = func(by uint64) { removedBy <- by }
	b := startMember(t, cfg, "127.0.0.1:0")
	connectAll(t, a, b)

	a.transport.RemovePeer(2)
	if _, ok := a.transport.PeerStatus(2); ok {
		t.Fatal("member 2 still has a status after RemovePeer")
	}
	select {
	case by := <-removedBy:
		if by != 1 {
			t.Fatalf("OnRemoved(%x), want member 1", by)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("member 2 was not told it was removed; log:\n%s", b.logs)
	}
	waitFor(t, "member 2's status names the removal", func() bool {
		status, _ := b.transport.PeerStatus(1)
		return strings.Contains(status.LastError, "member 2 was removed from the cluster")
	})
	if !b.logs.contains("says this member was removed") {
		t.Errorf("member 2 did not log the removal; log:\n%s", b.logs)
	}
	a.transport.Send([]*raftpb.Message{appMessage(1, 2, 1, 8)})
	if a.transport.Stats().MessagesDroppedUnknownPeer != 1 {
		t.Errorf("a message to a removed peer was not counted as dropped")
	}
	// Redials keep being refused, but the news is passed on once.
	waitFor(t, "more refusals", func() bool { return a.transport.Stats().StreamsRefused >= 3 })
	if n := len(removedBy); n != 0 {
		t.Errorf("OnRemoved called %d more times", n)
	}

	// A member 1 has never heard of is refused, not told it was removed.
	neverCfg := testConfig(3)
	neverCfg.OnRemoved = func(by uint64) { removedBy <- by }
	never := startMember(t, neverCfg, "127.0.0.1:0")
	never.transport.AddPeer(1, []string{a.url})
	waitFor(t, "the unknown member is refused", func() bool {
		status, _ := never.transport.PeerStatus(1)
		return strings.Contains(status.LastError, "member 3 is not a peer of member 1")
	})
	if n := len(removedBy); n != 0 {
		t.Errorf("an unknown member was told it was removed")
	}
}

// UpdatePeer moves the stream to the new URL.
func TestUpdatePeerRedialsNewURL(t *testing.T) {
	a := startMember(t, testConfig(1), "127.0.0.1:0")
	b := startMember(t, testConfig(2), "127.0.0.1:0")
	second, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go b.transport.Serve(second)
	secondURL := "http://" + second.Addr().String()
	connectAll(t, a, b)

	a.transport.UpdatePeer(2, []string{secondURL})
	waitFor(t, "stream on the new URL", func() bool {
		status, _ := a.transport.PeerStatus(2)
		return status.Active && status.URL == secondURL
	})
	a.transport.Send([]*raftpb.Message{appMessage(1, 2, 1, 8)})
	waitFor(t, "message over the new URL", func() bool { return len(b.handler.received(1)) == 1 })
}

// Close stops every goroutine: peers with live streams, a wedged peer
// mid-write, a dead peer mid-backoff, a snapshot in flight, and Serve.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	checkNoTransportGoroutines(t) // nothing left over from earlier tests
	before := runtime.NumGoroutine()

	handlers := []*recordingHandler{newRecordingHandler(), newRecordingHandler(), newRecordingHandler()}
	var transports []*TCPTransport
	var urls []string
	served := make(chan error, 3)
	for i, h := range handlers {
		cfg := testConfig(uint64(i + 1))
		cfg.Logger = func(string, ...any) {}
		tr, err := NewTCPTransport(cfg, h)
		if err != nil {
			t.Fatal(err)
		}
		l, err := stdnet.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { served <- tr.Serve(l) }()
		transports = append(transports, tr)
		urls = append(urls, "http://"+l.Addr().String())
	}
	wedged := startWedgedPeer(t, 4)
	for i, tr := range transports {
		for j := range transports {
			if i != j {
				tr.AddPeer(uint64(j+1), []string{urls[j]})
			}
		}
		tr.AddPeer(4, []string{wedged.url})
		tr.AddPeer(5, []string{"http://127.0.0.1:1"})
	}
	for i, tr := range transports {
		for j := range transports {
			if i != j {
				waitFor(t, "streams up", func() bool { s, _ := tr.PeerStatus(uint64(j + 1)); return s.Active })
			}
		}
	}
	// A snapshot to the wedged peer stays in flight (it never answers the
	// snapshot hello).
	snap := &raftpb.Message{Type: raftpb.MessageType_MsgSnap.Enum(), From: proto.Uint64(1), To: proto.Uint64(4),
		Snapshot: &raftpb.Snapshot{Data: make([]byte, 1<<20), Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(9)}}}
	transports[0].Send([]*raftpb.Message{snap, appMessage(1, 2, 1, 8), appMessage(1, 4, 1, 1<<20)})

	for _, tr := range transports {
		if err := tr.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := tr.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
	for range transports {
		if err := <-served; !errors.Is(err, ErrClosed) {
			t.Errorf("Serve returned %v, want ErrClosed", err)
		}
	}
	checkNoTransportGoroutines(t)
	// The wedged peer's goroutine belongs to the test and ends at cleanup;
	// allow for it and for runtime helpers that come and go.
	waitFor(t, "goroutine count back to its start", func() bool { return runtime.NumGoroutine() <= before+2 })

	// After Close nothing is sent and nothing is served.
	transports[0].Send([]*raftpb.Message{appMessage(1, 2, 2, 8)})
	l, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := transports[0].Serve(l); !errors.Is(err, ErrClosed) {
		t.Errorf("Serve after Close returned %v, want ErrClosed", err)
	}
	transports[0].AddPeer(6, []string{urls[1]})
	checkNoTransportGoroutines(t)
}

func TestNewTCPTransportRejectsBadConfig(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no local ID", func(c *Config) { c.LocalID = 0 }, "LocalID"},
		{"no cluster ID", func(c *Config) { c.ClusterID = 0 }, "ClusterID"},
		{"negative queue", func(c *Config) { c.QueueMessagesMax = -1 }, "QueueMessagesMax"},
		{"backoff inverted", func(c *Config) { c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond }, "BackoffMin"},
		{"chunk over frame", func(c *Config) { c.SnapshotChunkBytes, c.FrameBytesMax = 2<<20, 1<<20 }, "SnapshotChunkBytes"},
	}
	for _, c := range cases {
		cfg := testConfig(1)
		c.change(&cfg)
		_, err := NewTCPTransport(cfg, newRecordingHandler())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %s", c.name, err, c.want)
		}
	}
	if _, err := NewTCPTransport(testConfig(1), nil); err == nil {
		t.Error("a nil Handler was accepted")
	}
}

// freezableProxy forwards TCP connections to a target until frozen; frozen,
// it holds every byte without closing anything, as a partition does.
type freezableProxy struct {
	url    string
	frozen atomic.Bool
}

func startFreezableProxy(t *testing.T, targetURL string) *freezableProxy {
	t.Helper()
	l, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy := &freezableProxy{url: "http://" + l.Addr().String()}
	var mu sync.Mutex
	var conns []stdnet.Conn
	var pumps sync.WaitGroup
	stop := make(chan struct{})
	// waitThawed holds a pump while the proxy is frozen; false at cleanup.
	waitThawed := func() bool {
		for proxy.frozen.Load() {
			select {
			case <-stop:
				return false
			case <-time.After(5 * time.Millisecond):
			}
		}
		return true
	}
	pump := func(from, to stdnet.Conn) {
		defer pumps.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := from.Read(buf)
			// Bytes and closes alike wait out a freeze.
			if !waitThawed() || err != nil {
				to.Close()
				return
			}
			if _, err := to.Write(buf[:n]); err != nil {
				from.Close()
				return
			}
		}
	}
	pumps.Add(1)
	go func() {
		defer pumps.Done()
		for {
			client, err := l.Accept()
			if err != nil {
				return
			}
			server, err := stdnet.Dial("tcp", strings.TrimPrefix(targetURL, "http://"))
			if err != nil {
				client.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, client, server)
			mu.Unlock()
			pumps.Add(2)
			go pump(client, server)
			go pump(server, client)
		}
	}()
	t.Cleanup(func() {
		close(stop)
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		pumps.Wait()
	})
	return proxy
}

// A partition closes nothing, so only silence can tell: the stream must be
// declared down within IdleTimeout of missing keepalive echoes, the peer
// reported unreachable and dropped from ActivePeers, and the stream must
// come back once the partition heals.
func TestPartitionIsDetectedByMissingKeepalives(t *testing.T) {
	cfgA, cfgB := testConfig(1), testConfig(2)
	cfgA.IdleTimeout, cfgB.IdleTimeout = 400*time.Millisecond, 400*time.Millisecond
	cfgA.DialTimeout = 400 * time.Millisecond
	a := startMember(t, cfgA, "127.0.0.1:0")
	b := startMember(t, cfgB, "127.0.0.1:0")
	proxy := startFreezableProxy(t, b.url)
	a.transport.AddPeer(2, []string{proxy.url})
	b.transport.AddPeer(1, []string{a.url})
	waitActive(t, a, 2)

	proxy.frozen.Store(true)
	waitFor(t, "member 1 declares the stream to 2 down", func() bool {
		status, _ := a.transport.PeerStatus(2)
		return !status.Active
	})
	waitFor(t, "member 1 says why", func() bool { return a.logs.contains("no keepalive echo") })
	waitFor(t, "member 2 reported unreachable", func() bool { return a.handler.unreachableCount(2) > 0 })
	if got := a.transport.ActivePeers(); len(got) != 0 {
		t.Errorf("ActivePeers %v during the partition", got)
	}

	proxy.frozen.Store(false)
	waitActive(t, a, 2)
	a.transport.Send([]*raftpb.Message{appMessage(1, 2, 1, 8)})
	waitFor(t, "message after the partition heals", func() bool { return len(b.handler.received(1)) == 1 })
}

// Connections that send the preamble and then nothing cannot keep peers
// out: at the inbound bound the oldest of them makes room, and a peer that
// restarts gets its streams back at once.
func TestSilentConnectionsDoNotKeepPeersOut(t *testing.T) {
	a := startMember(t, testConfig(1), "127.0.0.1:0")
	b := startMember(t, testConfig(2), "127.0.0.1:0")
	connectAll(t, a, b)
	addr := strings.TrimPrefix(a.url, "http://")
	var silent []stdnet.Conn
	for range inboundConnectionsMax + 50 {
		conn, err := stdnet.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte(connectionMagic))
		silent = append(silent, conn)
	}
	waitFor(t, "the oldest silent connections shed", func() bool {
		return a.transport.Stats().ConnectionsShed >= 50
	})
	// b's streams to a were admitted before the flood: never shed.
	if status, _ := b.transport.PeerStatus(1); !status.Active {
		t.Fatalf("b's stream to a went down: %+v", status)
	}
	// b restarts its transport: its new streams get in past the flood.
	b.transport.Close()
	b2 := startMember(t, testConfig(2), "127.0.0.1:0")
	a.transport.UpdatePeer(2, []string{b2.url})
	b2.transport.AddPeer(1, []string{a.url})
	waitActive(t, b2, 1)
	waitActive(t, a, 2)
	b2.transport.Send([]*raftpb.Message{appMessage(2, 1, 1, 10)})
	waitFor(t, "a message from the restarted peer", func() bool { return len(a.handler.received(2)) > 0 })
	if st := a.transport.Stats(); st.ConnectionsRefused != 0 {
		t.Errorf("%d connections refused; silent ones should have made room", st.ConnectionsRefused)
	}
	expectClosedByPeer(t, silent[0], "the oldest silent connection")
}

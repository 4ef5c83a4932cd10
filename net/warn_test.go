package net

import (
	"strings"
	"testing"
	"time"
)

// warnLinePrefix marks the lines a test transport logged through
// Config.WarnLogger.
const warnLinePrefix = "WARN "

// warned reports whether a line holding substring was logged at warn.
func (l *logBuffer) warned(substring string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.HasPrefix(line, warnLinePrefix) && strings.Contains(line, substring) {
			return true
		}
	}
	return false
}

// TestViolationsAreWarnings: what an operator must see (bytes that are not
// the peer protocol, a hello that breaks it, a stream refused, a peer that
// breaks the protocol mid-stream) is logged through WarnLogger; a stream
// that merely ends is not.
func TestViolationsAreWarnings(t *testing.T) {
	a := startMember(t, testConfig(1), "127.0.0.1:0")
	a.transport.AddPeer(3, []string{"http://127.0.0.1:1"})

	conn := rawPeerConn(t, a)
	conn.Write([]byte("GET /members HTTP/1.1\r\nHost: x\r\n\r\n"))
	expectClosedByPeer(t, conn, "http request")

	conn = rawPeerConn(t, a)
	conn.Write(AppendFrame([]byte(connectionMagic), FrameHello, []byte{0, 1, 1}))
	expectClosedByPeer(t, conn, "short hello")

	conn = rawPeerConn(t, a)
	if _, err := exchangeHello(conn, Hello{Version: ProtocolVersion, Stream: StreamMessages, ClusterID: testClusterID, From: 5, To: 1}, waitTimeout); err == nil {
		t.Fatal("a hello from a member that is not a peer was accepted")
	}
	expectClosedByPeer(t, conn, "unknown member")

	conn = rawPeerConn(t, a)
	if _, err := exchangeHello(conn, Hello{Version: ProtocolVersion, Stream: StreamMessages, ClusterID: testClusterID, From: 3, To: 1}, waitTimeout); err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Time{})
	conn.Write(AppendFrame(nil, FrameKeepalive, []byte{1}))
	expectClosedByPeer(t, conn, "keepalive with payload")

	conn = rawPeerConn(t, a)
	if _, err := exchangeHello(conn, Hello{Version: ProtocolVersion, Stream: StreamMessages, ClusterID: testClusterID, From: 3, To: 1}, waitTimeout); err != nil {
		t.Fatal(err)
	}
	conn.Close() // a stream that ends: no warning

	for _, want := range []string{
		"is not a noded peer stream",
		"peer protocol violation: hello of 3 bytes",
		"member 5 is not a peer of member 1",
		"keepalive with a 1-byte payload",
	} {
		waitFor(t, "a warning saying "+want, func() bool { return a.logs.warned(want) })
	}
	waitFor(t, "the ended stream logged", func() bool { return a.logs.contains("closed by the peer") })
	if a.logs.warned("closed by the peer") {
		t.Errorf("a stream that ended was logged as a warning:\n%s", a.logs)
	}
}

package net

import (
	"fmt"
	stdnet "net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// waitTimeout is how long tests wait for something that should happen in
// milliseconds; generous, so a loaded 2-core machine does not flake.
const waitTimeout = 20 * time.Second

// recordingHandler records what a transport delivers.
type recordingHandler struct {
	mu          sync.Mutex
	changed     *sync.Cond
	messages    []*raftpb.Message
	unreachable map[uint64]int
	snapshots   []snapshotReport
	processErr  error // returned by Process when set
}

type snapshotReport struct {
	id     uint64
	failed bool
}

func newRecordingHandler() *recordingHandler {
	h := &recordingHandler{unreachable: map[uint64]int{}}
	h.changed = sync.NewCond(&h.mu)
	return h
}

func (h *recordingHandler) Process(m *raftpb.Message) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.processErr != nil {
		return h.processErr
	}
	h.messages = append(h.messages, m)
	return nil
}

func (h *recordingHandler) ReportUnreachable(id uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unreachable[id]++
}

func (h *recordingHandler) ReportSnapshot(id uint64, failed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.snapshots = append(h.snapshots, snapshotReport{id, failed})
}

// received returns the messages delivered so far from the given member.
func (h *recordingHandler) received(from uint64) []*raftpb.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*raftpb.Message
	for _, m := range h.messages {
		if m.GetFrom() == from {
			out = append(out, m)
		}
	}
	return out
}

func (h *recordingHandler) unreachableCount(id uint64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.unreachable[id]
}

func (h *recordingHandler) snapshotReports() []snapshotReport {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]snapshotReport(nil), h.snapshots...)
}

// logBuffer collects a transport's log lines.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuffer) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logBuffer) contains(substring string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, substring) {
			return true
		}
	}
	return false
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

const testClusterID = 0xc1

// member is one transport on a loopback listener.
type member struct {
	id        uint64
	transport *TCPTransport
	handler   *recordingHandler
	logs      *logBuffer
	url       string
	served    chan error // Serve's result
}

// testConfig is a Config with short backoffs for tests.
func testConfig(id uint64) Config {
	return Config{
		LocalID:      id,
		ClusterID:    testClusterID,
		DialTimeout:  5 * time.Second,
		WriteTimeout: 5 * time.Second,
		IdleTimeout:  5 * time.Second,
		BackoffMin:   10 * time.Millisecond,
		BackoffMax:   200 * time.Millisecond,
	}
}

// startMember starts a transport serving on addr ("127.0.0.1:0" for any
// port). It is closed when the test ends, and the test then checks that
// no transport goroutine is left.
func startMember(t *testing.T, cfg Config, addr string) *member {
	t.Helper()
	l, err := stdnet.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	return startMemberOn(t, cfg, l, "http")
}

func startMemberOn(t *testing.T, cfg Config, l stdnet.Listener, scheme string) *member {
	t.Helper()
	registerLeakCheck(t)
	m := &member{id: cfg.LocalID, handler: newRecordingHandler(), logs: &logBuffer{}, served: make(chan error, 1)}
	cfg.Logger = m.logs.logf
	cfg.WarnLogger = func(format string, args ...any) { m.logs.logf(warnLinePrefix+format, args...) }
	tr, err := NewTCPTransport(cfg, m.handler)
	if err != nil {
		t.Fatalf("NewTCPTransport: %v", err)
	}
	m.transport = tr
	m.url = scheme + "://" + l.Addr().String()
	go func() { m.served <- tr.Serve(l) }()
	t.Cleanup(func() {
		tr.Close()
		if t.Failed() {
			t.Logf("log of member %x:\n%s", m.id, m.logs)
		}
	})
	return m
}

// leakChecks holds the tests that already check for leaked goroutines.
var leakChecks sync.Map // *testing.T -> struct{}

// registerLeakCheck makes the test check, after everything it started is
// closed (cleanups run last-registered first), that no transport goroutine
// is left.
func registerLeakCheck(t *testing.T) {
	if _, registered := leakChecks.LoadOrStore(t, struct{}{}); registered {
		return
	}
	t.Cleanup(func() {
		leakChecks.Delete(t)
		checkNoTransportGoroutines(t)
	})
}

// connectAll makes every member a peer of every other and waits until all
// streams are up.
func connectAll(t *testing.T, members ...*member) {
	t.Helper()
	for _, a := range members {
		for _, b := range members {
			if a != b {
				a.transport.AddPeer(b.id, []string{b.url})
			}
		}
	}
	for _, a := range members {
		for _, b := range members {
			if a != b {
				waitActive(t, a, b.id)
			}
		}
	}
}

func waitActive(t *testing.T, m *member, peerID uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("member %x: stream to %x up", m.id, peerID), func() bool {
		status, ok := m.transport.PeerStatus(peerID)
		return ok && status.Active
	})
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", waitTimeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func appMessage(from, to, index uint64, entryBytes int) *raftpb.Message {
	return &raftpb.Message{
		Type:    raftpb.MessageType_MsgApp.Enum(),
		From:    proto.Uint64(from),
		To:      proto.Uint64(to),
		Term:    proto.Uint64(3),
		LogTerm: proto.Uint64(3),
		Index:   proto.Uint64(index),
		Commit:  proto.Uint64(index),
		Entries: []*raftpb.Entry{{
			Term:  proto.Uint64(3),
			Index: proto.Uint64(index + 1),
			Type:  raftpb.EntryType_EntryNormal.Enum(),
			Data:  make([]byte, entryBytes),
		}},
	}
}

// checkNoTransportGoroutines fails the test if a goroutine started by the
// package's non-test code is still alive after a short grace period: a
// goleak-style check keyed on the "created by" frame.
func checkNoTransportGoroutines(t *testing.T) {
	t.Helper()
	var leaked []string
	deadline := time.Now().Add(waitTimeout)
	for {
		leaked = transportGoroutines()
		if len(leaked) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(leaked) > 0 {
		t.Errorf("%d transport goroutines outlived Close:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	}
}

// transportGoroutines returns the stacks of live goroutines created by
// non-test code of this package.
func transportGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var ours []string
	for _, stack := range strings.Split(string(buf), "\n\n") {
		lines := strings.Split(stack, "\n")
		for i, line := range lines {
			if !strings.HasPrefix(line, "created by github.com/noded/noded/net.") || i+1 >= len(lines) {
				continue
			}
			file := strings.TrimSpace(lines[i+1])
			if file, _, _ = strings.Cut(file, ":"); !strings.HasSuffix(file, "_test.go") {
				ours = append(ours, stack)
			}
		}
	}
	return ours
}

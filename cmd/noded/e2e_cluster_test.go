package main

// The harness: members as real processes on free loopback ports, started with
// etcd's static bootstrap flags, each in its own process group so a SIGKILL
// takes the whole member and nothing outlives the test.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/noded/noded/cmd/internal/memberproc"
)

const (
	// startTimeout bounds how long a member may take to serve a
	// linearizable read after it starts; generous for a loaded 2-core box.
	startTimeout = 90 * time.Second
	// requestTimeout bounds one client request in the tests.
	requestTimeout = 15 * time.Second
	// logTailPrintBytes is how much of a member's log a failed test prints.
	logTailPrintBytes = 48 << 10
	// logKeepBytes is how much of a member's log is kept in memory.
	logKeepBytes = 4 << 20
)

type e2eCluster struct {
	members []*e2eMember
}

type e2eMember struct {
	binary    string // the member binary; "" means e2eBinary
	name      string
	dataDir   string
	clientURL string
	peerURL   string
	// args are the flags of every start, so a restart is the same command.
	args []string
	log  *logBuffer
	// tls dials clientURL when it is https.
	tls *tls.Config
	// wrap is a command the binary runs under, if any.
	wrap []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the current process has exited
	// killedByTest is set before the harness kills the process, so an exit
	// it did not cause is reported as a failure.
	killedByTest bool
	waitErr      error
	starts       int
}

// newCluster starts size members that bootstrap one cluster through
// --initial-cluster, waits until each serves a linearizable read, and
// registers their teardown. extraFlags go to every member.
func newCluster(t testing.TB, size int, extraFlags ...string) *e2eCluster {
	t.Helper()
	return newClusterOf(t, e2eBinary, size, extraFlags...)
}

// newClusterOf is newCluster with another member binary (side-by-side
// benchmarks start etcd 3.7 next to noded).
func newClusterOf(t testing.TB, binary string, size int, extraFlags ...string) *e2eCluster {
	t.Helper()
	return newClusterWith(t, clusterOptions{size: size, binary: binary, flags: func(int) []string { return extraFlags }})
}

// clusterOptions shape a cluster beyond its size.
type clusterOptions struct {
	size int
	// binary is the member binary (default e2eBinary).
	binary string
	// clientScheme and peerScheme are the URLs' schemes (default http).
	clientScheme, peerScheme string
	// flags are member i's flags beyond the bootstrap ones.
	flags func(i int) []string
	// clientTLS dials the members' https client URLs (the harness's own
	// clients and readiness probes).
	clientTLS *tls.Config
	// noWait lists members not waited for (expected never to be ready).
	noWait map[int]bool
	// wrap is a command the member binary runs under (prlimit ...).
	wrap []string
}

func newClusterWith(t testing.TB, o clusterOptions) *e2eCluster {
	t.Helper()
	requireE2E(t)
	if o.binary == "" {
		o.binary = e2eBinary
	}
	if o.clientScheme == "" {
		o.clientScheme = "http"
	}
	if o.peerScheme == "" {
		o.peerScheme = "http"
	}
	dir := t.TempDir()
	ports := freePorts(t, 2*o.size)
	c := &e2eCluster{}
	var initialCluster []string
	for i := 0; i < o.size; i++ {
		m := &e2eMember{
			binary:    o.binary,
			name:      fmt.Sprintf("m%d", i),
			clientURL: fmt.Sprintf("%s://127.0.0.1:%d", o.clientScheme, ports[2*i]),
			peerURL:   fmt.Sprintf("%s://127.0.0.1:%d", o.peerScheme, ports[2*i+1]),
			log:       &logBuffer{},
			tls:       o.clientTLS,
			wrap:      o.wrap,
		}
		m.dataDir = filepath.Join(dir, m.name+".etcd")
		c.members = append(c.members, m)
		initialCluster = append(initialCluster, m.name+"="+m.peerURL)
	}
	token := fmt.Sprintf("e2e-%s-%d", sanitize(t.Name()), time.Now().UnixNano())
	for i, m := range c.members {
		m.args = memberproc.BootstrapArgs(m.name, m.dataDir, m.clientURL, m.peerURL, strings.Join(initialCluster, ","), token)
		if o.flags != nil {
			m.args = append(m.args, o.flags(i)...)
		}
	}
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(func() { c.teardown(t) })
	for _, m := range c.members {
		m.start(t)
	}
	for i, m := range c.members {
		if !o.noWait[i] {
			m.waitReady(t)
		}
	}
	return c
}

func (c *e2eCluster) teardown(t testing.TB) {
	for _, m := range c.members {
		m.mu.Lock()
		running := m.cmd != nil && !isClosed(m.exited)
		unexpected := m.cmd != nil && isClosed(m.exited) && !m.killedByTest
		waitErr := m.waitErr
		m.mu.Unlock()
		if unexpected {
			t.Errorf("member %s exited by itself during the test: %v", m.name, waitErr)
		}
		if running {
			m.kill(t)
		}
	}
	if t.Failed() {
		for _, m := range c.members {
			t.Logf("==== log of member %s (%s), last %d bytes ====\n%s", m.name, m.clientURL, logTailPrintBytes, m.log.tail(logTailPrintBytes))
		}
	}
}

func (m *e2eMember) start(t testing.TB) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil && !isClosed(m.exited) {
		t.Fatalf("member %s is already running", m.name)
	}
	m.starts++
	binary := m.binary
	if binary == "" {
		binary = e2eBinary
	}
	fmt.Fprintf(m.log, "\n==== e2e: start #%d: %s %s\n", m.starts, binary, strings.Join(m.args, " "))
	cmd := exec.Command(binary, m.args...)
	if len(m.wrap) > 0 {
		cmd = exec.Command(m.wrap[0], append(append(m.wrap[1:], binary), m.args...)...)
	}
	cmd.Env = memberproc.Env()
	cmd.Stdout = m.log
	cmd.Stderr = m.log
	cmd.SysProcAttr = memberproc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start member %s: %v", m.name, err)
	}
	exited := make(chan struct{})
	m.cmd, m.exited, m.killedByTest, m.waitErr = cmd, exited, false, nil
	go func() {
		err := cmd.Wait()
		m.mu.Lock()
		m.waitErr = err
		m.mu.Unlock()
		fmt.Fprintf(m.log, "\n==== e2e: process exited: %v\n", err)
		close(exited)
	}()
}

// kill sends SIGKILL to the member's process group and waits for the exit.
func (m *e2eMember) kill(t testing.TB) {
	t.Helper()
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.killedByTest = true
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = memberproc.KillGroup(cmd)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Errorf("member %s (pid %d) did not exit 30s after SIGKILL", m.name, cmd.Process.Pid)
	}
}

// restart starts the member again with the same flags and data directory and
// waits until it serves a linearizable read.
func (m *e2eMember) restart(t testing.TB) {
	t.Helper()
	m.start(t)
	m.waitReady(t)
}

// waitReady polls until the member answers a linearizable read, which needs
// a leader and a quorum behind it; the process exiting meanwhile fails fast.
func (m *e2eMember) waitReady(t testing.TB) {
	t.Helper()
	err := memberproc.WaitReady(m.clientURL, "e2e-ready-probe", startTimeout, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return isClosed(m.exited)
	}, m.tls)
	if errors.Is(err, memberproc.ErrExited) {
		m.mu.Lock()
		waitErr := m.waitErr
		m.mu.Unlock()
		t.Fatalf("member %s exited while starting: %v", m.name, waitErr)
	}
	if err != nil {
		t.Fatalf("member %s: %v", m.name, err)
	}
}

func (c *e2eCluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL)
	}
	return eps
}

// client returns a client on the given endpoints (all members if none),
// closed when the test ends.
func (c *e2eCluster) client(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	if len(endpoints) == 0 {
		endpoints = c.endpoints()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		TLS:         c.members[0].tls,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("client for %v: %v", endpoints, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// leader polls the running members until they all name the same leader
// among them, and returns its index in c.members.
func (c *e2eCluster) leader(t testing.TB, cli *clientv3.Client) int {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	var last string
	for time.Now().Before(deadline) {
		leaders := map[uint64]bool{}
		ids := map[uint64]int{}
		ok := true
		for i, m := range c.members {
			if !m.running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := cli.Status(ctx, m.clientURL)
			cancel()
			if err != nil {
				ok, last = false, fmt.Sprintf("status of %s: %v", m.name, err)
				break
			}
			leaders[st.Leader] = true
			ids[st.Header.MemberId] = i
		}
		if ok && len(leaders) == 1 {
			for id := range leaders {
				if i, found := ids[id]; found {
					return i
				}
				last = fmt.Sprintf("leader %x is not a running member", id)
			}
		} else if ok {
			last = fmt.Sprintf("members disagree on the leader: %v", leaders)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no agreed leader after %v: %s", startTimeout, last)
	return -1
}

func (m *e2eMember) running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd != nil && !isClosed(m.exited)
}

// freePorts is memberproc.FreePorts, failing the test on an error.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports, err := memberproc.FreePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

func isClosed(ch chan struct{}) bool {
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, s)
}

// logBuffer keeps the newest logKeepBytes of a member's output across its
// restarts.
type logBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > logKeepBytes {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-logKeepBytes/2:]...)
	}
	return len(p), nil
}

// size is how many bytes the buffer holds now: since(size) later returns
// what was written after.
func (b *logBuffer) size() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buf)
}

// since returns what was written after the buffer held off bytes (all it
// holds, if it was trimmed meanwhile).
func (b *logBuffer) since(off int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if off > len(b.buf) {
		return string(b.buf)
	}
	return string(b.buf[off:])
}

func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) <= n {
		return string(b.buf)
	}
	return "...\n" + string(b.buf[len(b.buf)-n:])
}

// ctxTimeout is a request context for one call in a test.
func ctxTimeout(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	t.Cleanup(cancel)
	return ctx
}

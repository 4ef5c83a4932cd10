package server

import (
	"context"
	"fmt"
	stdnet "net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Tests run real members in one process on loopback listeners opened on
// port 0 (so ports never collide), with data directories under t.TempDir.
// Deadlines are generous: the suite must not flake on a loaded 2-core
// machine, and nothing waits by sleeping: every wait polls a condition.

const (
	testHeartbeatMs = 20
	testElectionMs  = 200
	// waitMax bounds every wait for a condition in these tests.
	waitMax = 30 * time.Second
)

type testMember struct {
	name       string
	cfg        Config
	m          *Member
	clientURL  string
	peerURL    string
	clientAddr string
}

func listenLoopback(t *testing.T) stdnet.Listener {
	t.Helper()
	l, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func urlOf(t *testing.T, l stdnet.Listener) url.URL {
	t.Helper()
	u, err := url.Parse("http://" + l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return *u
}

func testLogger(t *testing.T) *zap.Logger {
	if testing.Verbose() {
		return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	}
	return zap.NewNop()
}

// newTestConfigs makes the configs of an n-member cluster with fresh
// listeners; tweak adjusts each before start.
func newTestConfigs(t *testing.T, n int) []*testMember {
	t.Helper()
	tms := make([]*testMember, n)
	var initial []string
	for i := range tms {
		cl, pl := listenLoopback(t), listenLoopback(t)
		cu, pu := urlOf(t, cl), urlOf(t, pl)
		name := fmt.Sprintf("m%d", i)
		cfg := DefaultConfig()
		cfg.Name = name
		cfg.DataDir = t.TempDir()
		cfg.ListenClientURLs = []url.URL{cu}
		cfg.AdvertiseClientURLs = []url.URL{cu}
		cfg.ListenPeerURLs = []url.URL{pu}
		cfg.InitialAdvertisePeerURLs = []url.URL{pu}
		cfg.ClientListeners = []stdnet.Listener{cl}
		cfg.PeerListeners = []stdnet.Listener{pl}
		cfg.HeartbeatMs = testHeartbeatMs
		cfg.ElectionMs = testElectionMs
		cfg.InitialClusterToken = "test-" + t.Name()
		cfg.Logger = testLogger(t).Named(name)
		tms[i] = &testMember{name: name, cfg: cfg, clientURL: cu.String(), peerURL: pu.String(), clientAddr: cu.Host}
		initial = append(initial, name+"="+pu.String())
	}
	for _, tm := range tms {
		tm.cfg.InitialCluster = strings.Join(initial, ",")
	}
	return tms
}

func (tm *testMember) start(t *testing.T) {
	t.Helper()
	m, err := Start(tm.cfg)
	if err != nil {
		t.Fatalf("start %s: %v", tm.name, err)
	}
	tm.m = m
	t.Cleanup(m.Stop)
}

// startCluster starts n members and waits until they agree on a leader.
func startCluster(t *testing.T, n int) []*testMember {
	t.Helper()
	tms := newTestConfigs(t, n)
	for _, tm := range tms {
		tm.start(t)
	}
	waitLeader(t, tms)
	return tms
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitMax)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitMax, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitLeader waits until every running member knows the same leader and
// has published its name (so member lists show it started).
func waitLeader(t *testing.T, tms []*testMember) uint64 {
	t.Helper()
	var lead uint64
	waitFor(t, "a leader known to every member", func() bool {
		lead = 0
		for _, tm := range tms {
			if tm.m == nil {
				continue
			}
			st := tm.m.state.Load()
			if st.status.Lead == 0 || (lead != 0 && st.status.Lead != lead) {
				return false
			}
			lead = st.status.Lead
			named := 0
			for _, mem := range st.status.Members {
				if mem.Name != "" {
					named++
				}
			}
			if named < len(st.status.Members) || len(st.status.Members) == 0 {
				return false
			}
		}
		return lead != 0
	})
	return lead
}

func newClient(t *testing.T, tms ...*testMember) *clientv3.Client {
	t.Helper()
	var eps []string
	for _, tm := range tms {
		eps = append(eps, tm.clientURL)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitMax)
	t.Cleanup(cancel)
	return ctx
}

// putConcurrently runs writers goroutines that each put perWriter keys
// (named and valued by key and value) through c, and fails the test on
// the first error once all have finished.
func putConcurrently(t *testing.T, ctx context.Context, c *clientv3.Client, writers, perWriter int,
	key func(w, i int) string, value func(w, i int) string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				if _, err := c.Put(ctx, key(w, i), value(w, i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

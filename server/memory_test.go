package server

import (
	"fmt"
	stdnet "net"
	"net/url"
	"runtime/debug"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// An idle member returns its heap's garbage once per idle period: after
// writes it repacks the store and raft's kept log and releases, and writes
// again after that release start a new period with one more of each.
func TestIdleMemoryReleaseAfterActivity(t *testing.T) {
	tms := newTestConfigs(t, 1)
	tms[0].cfg.IdleMemoryRelease = 50 * time.Millisecond
	tms[0].start(t)
	waitLeader(t, tms)
	cli := newClient(t, tms...)
	ctx := testContext(t)
	m := tms[0].m
	for round := uint64(1); round <= 2; round++ {
		before, repackedBefore, logBefore := m.idleReleases.Load(), m.repackedKeys.Load(), m.repackedLog.Load()
		if _, err := cli.Put(ctx, fmt.Sprintf("k%d", round), "v"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a release after the put", func() bool { return m.idleReleases.Load() > before })
		if got := m.repackedKeys.Load() - repackedBefore; got != round {
			t.Fatalf("round %d: the idle repack moved %d keys, want every key (%d)", round, got, round)
		}
		// The log holds at least the put and the leader's first entry.
		if got := m.repackedLog.Load() - logBefore; got < 2 {
			t.Fatalf("round %d: the idle repack moved %d log entries, want every entry in raft's log", round, got)
		}
	}
}

// A member restarted with PauseGCWhileLoading turns the collector back on
// once it has applied what it recovered, whatever the setting was.
func TestCollectorBackOnAfterLoading(t *testing.T) {
	before := debug.SetGCPercent(137)
	defer debug.SetGCPercent(before)
	tms := newTestConfigs(t, 1)
	tms[0].cfg.SnapshotCount = 20 // a snapshot to load, and entries after it
	tms[0].cfg.SnapshotCatchUpEntries = 5
	tms[0].start(t)
	waitLeader(t, tms)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	for i := range 50 {
		if _, err := c.Put(ctx, fmt.Sprintf("k%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	tms[0].m.Stop()

	restart := tms[0].cfg
	cl, pl := listenLoopback(t), listenLoopback(t)
	restart.ClientListeners, restart.PeerListeners = []stdnet.Listener{cl}, []stdnet.Listener{pl}
	cu := urlOf(t, cl)
	restart.AdvertiseClientURLs = []url.URL{cu}
	restart.PauseGCWhileLoading = true
	re := &testMember{name: tms[0].name, cfg: restart, clientURL: cu.String()}
	re.start(t)
	waitLeader(t, []*testMember{re})
	get, err := newClient(t, re).Get(ctx, "k", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || get.Count != 50 {
		t.Fatalf("after restart: %v keys, %v", get, err)
	}
	waitFor(t, "the collector back on", func() bool {
		p := debug.SetGCPercent(137)
		debug.SetGCPercent(p)
		return p == 137
	})
}

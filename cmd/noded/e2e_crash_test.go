package main

// Crash tests: a steady write load while one member is killed with SIGKILL
// and restarted with the same flags. Every write a client saw acknowledged
// must then be readable from every member, and all members must hash their
// key-value history at one revision to the same value.

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	crashWriters = 4
	// acksPerPhase is how many acknowledged writes each phase waits for:
	// before the kill, while the member is down, after its restart.
	acksPerPhase = 200
	// crashSnapshotCount makes members snapshot often, so the restart
	// replays a snapshot plus a log tail rather than only a log.
	crashSnapshotCount = "--snapshot-count=200"
	// writeTimeout bounds one write of the load; writes cut off by the
	// kill fail and are simply not counted as acknowledged.
	writeTimeout = 5 * time.Second
)

func TestCrashFollower(t *testing.T) { testCrash(t, false) }

func TestCrashLeader(t *testing.T) { testCrash(t, true) }

func testCrash(t *testing.T, killLeader bool) {
	c := newCluster(t, 3, crashSnapshotCount)
	cli := c.client(t)

	load := startLoad(t, c, crashWriters)
	defer load.stop()

	load.waitAcked(t, acksPerPhase)
	leader := c.leader(t, cli)
	victimIndex := (leader + 1) % len(c.members)
	if killLeader {
		victimIndex = leader
	}
	victim := c.members[victimIndex]
	before, err := cli.Status(ctxTimeout(t), victim.clientURL)
	if err != nil {
		t.Fatalf("status of %s: %v", victim.name, err)
	}
	t.Logf("killing %s (leader: %v) after %d acknowledged writes", victim.name, victimIndex == leader, load.ackedCount())
	victim.kill(t)

	// The two survivors are a quorum: writes go on, under a new leader if
	// the old one was killed.
	load.waitAcked(t, load.ackedCount()+acksPerPhase)
	if newLeader := c.leader(t, cli); newLeader == victimIndex {
		t.Fatalf("killed member %s is still the leader", victim.name)
	}

	t.Logf("restarting %s after %d acknowledged writes", victim.name, load.ackedCount())
	victim.restart(t)
	after, err := cli.Status(ctxTimeout(t), victim.clientURL)
	if err != nil {
		t.Fatalf("status of %s: %v", victim.name, err)
	}
	if after.Header.MemberId != before.Header.MemberId || after.Header.ClusterId != before.Header.ClusterId {
		t.Errorf("restarted %s is member %x of cluster %x, was %x of %x", victim.name, after.Header.MemberId, after.Header.ClusterId, before.Header.MemberId, before.Header.ClusterId)
	}
	load.waitAcked(t, load.ackedCount()+acksPerPhase)
	acked := load.stop()
	t.Logf("load stopped: %d acknowledged writes, %d failed or unknown", len(acked), load.failed.Load())

	rev := mustGet(t, cli, "crash-final-probe").Header.Revision
	for _, m := range c.members {
		member := c.client(t, m.clientURL)
		waitApplied(t, member, m.name, rev)
		// A serializable read is the member's own store, not the leader's.
		resp, err := member.Get(ctxTimeout(t), "load/", clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatalf("read load keys from %s: %v", m.name, err)
		}
		stored := map[string]string{}
		for _, kv := range resp.Kvs {
			stored[string(kv.Key)] = string(kv.Value)
		}
		var lost []string
		for key, value := range acked {
			if stored[key] != value {
				lost = append(lost, fmt.Sprintf("%s=%q (stored %q)", key, value, stored[key]))
			}
		}
		if len(lost) > 0 {
			sort.Strings(lost)
			t.Errorf("member %s lost %d of %d acknowledged writes, first: %v", m.name, len(lost), len(acked), lost[:min(len(lost), 5)])
		}
	}
	wantSameHashKV(t, c, cli)
}

// writeLoad is several clients each writing unique keys one at a time and
// recording the writes the cluster acknowledged.
type writeLoad struct {
	done     chan struct{}
	wg       sync.WaitGroup
	ackCount atomic.Int64
	failed   atomic.Int64
	mu       sync.Mutex
	acked    map[string]string
	stopOnce sync.Once
}

func startLoad(t *testing.T, c *e2eCluster, writers int) *writeLoad {
	t.Helper()
	l := &writeLoad{done: make(chan struct{}), acked: map[string]string{}}
	for w := 0; w < writers; w++ {
		// A client each, on all members, as separate applications would be.
		cli := c.client(t)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-l.done:
					return
				default:
				}
				key, value := fmt.Sprintf("load/w%d/%07d", w, seq), fmt.Sprintf("value-%d-%d", w, seq)
				ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
				_, err := cli.Put(ctx, key, value)
				cancel()
				if err != nil {
					l.failed.Add(1)
					continue
				}
				l.mu.Lock()
				l.acked[key] = value
				l.mu.Unlock()
				l.ackCount.Add(1)
			}
		}()
	}
	t.Cleanup(func() { l.stop() })
	return l
}

func (l *writeLoad) ackedCount() int64 { return l.ackCount.Load() }

func (l *writeLoad) waitAcked(t *testing.T, n int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d acknowledged writes", n), func() (bool, string) {
		got := l.ackedCount()
		return got >= n, fmt.Sprintf("%d acknowledged, %d failed", got, l.failed.Load())
	})
}

// stop ends the load, waits for the writers and returns the acknowledged
// writes.
func (l *writeLoad) stop() map[string]string {
	l.stopOnce.Do(func() { close(l.done) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked
}

// TestCrashAll kills every member at once, mid-load, and restarts them all:
// what the cluster acknowledged was on a quorum's disks, so it all comes
// back, at the same revision.
func TestCrashAll(t *testing.T) {
	c := newCluster(t, 3, crashSnapshotCount)
	cli := c.client(t)
	load := startLoad(t, c, crashWriters)
	load.waitAcked(t, acksPerPhase)
	for _, m := range c.members {
		m.kill(t)
	}
	acked := load.stop()
	t.Logf("killed all members after %d acknowledged writes", len(acked))
	for _, m := range c.members {
		m.start(t)
	}
	for _, m := range c.members {
		m.waitReady(t)
	}
	resp, err := cli.Get(ctxTimeout(t), "load/", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("read load keys: %v", err)
	}
	stored := map[string]string{}
	for _, kv := range resp.Kvs {
		stored[string(kv.Key)] = string(kv.Value)
	}
	lost := 0
	for key, value := range acked {
		if stored[key] != value {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("lost %d of %d acknowledged writes across a restart of every member", lost, len(acked))
	}
	wantSameHashKV(t, c, cli)
}

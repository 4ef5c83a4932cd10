package server

import (
	"context"
	"errors"
	"fmt"
	stdnet "net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/disk"
	"github.com/noded/noded/node"
)

func leaderAndFollower(t *testing.T, tms []*testMember) (leader, follower *testMember) {
	t.Helper()
	lead := waitLeader(t, tms)
	for _, tm := range tms {
		if tm.m == nil {
			continue
		}
		if tm.m.ID() == lead {
			leader = tm
		} else if follower == nil {
			follower = tm
		}
	}
	return leader, follower
}

// TestThreeMembers starts a three-member cluster in one process and checks
// that IDs are etcd's, writes on one member are read linearizably on the
// others, member list shows everyone started, leases granted on a follower
// are kept alive through it (the follower forwards to the leader), and the
// cluster keeps serving after its leader stops.
func TestThreeMembers(t *testing.T) {
	tms := startCluster(t, 3)
	for _, tm := range tms {
		want := node.MemberID([]string{tm.peerURL}, tm.cfg.InitialClusterToken, nil)
		if tm.m.ID() != want {
			t.Fatalf("%s has ID %x, want etcd's %x", tm.name, tm.m.ID(), want)
		}
	}
	ctx := testContext(t)
	clients := make([]*clientv3.Client, len(tms))
	for i, tm := range tms {
		clients[i] = newClient(t, tm)
	}
	for i := range 30 {
		if _, err := clients[i%3].Put(ctx, fmt.Sprintf("k%02d", i), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		// Every write is visible at once on every member (linearizable).
		get, err := clients[(i+1)%3].Get(ctx, fmt.Sprintf("k%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		if len(get.Kvs) != 1 || string(get.Kvs[0].Value) != fmt.Sprint(i) {
			t.Fatalf("read of k%02d on another member: %v", i, get.Kvs)
		}
	}

	list, err := clients[0].MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Members) != 3 {
		t.Fatalf("member list has %d members, want 3", len(list.Members))
	}
	for _, mem := range list.Members {
		if mem.Name == "" || len(mem.ClientURLs) != 1 || len(mem.PeerURLs) != 1 || mem.IsLearner {
			t.Fatalf("member %v: want a started voter with its name and URLs", mem)
		}
	}

	leader, follower := leaderAndFollower(t, tms)
	fc := newClient(t, follower)
	grant, err := fc.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	ka, err := fc.KeepAliveOnce(ctx, grant.ID)
	if err != nil {
		t.Fatalf("keepalive through a follower: %v", err)
	}
	if ka.TTL != 60 {
		t.Fatalf("keepalive through a follower: TTL %d, want 60", ka.TTL)
	}
	ttl, err := fc.TimeToLive(ctx, grant.ID)
	if err != nil {
		t.Fatalf("time-to-live through a follower: %v", err)
	}
	if ttl.GrantedTTL != 60 || ttl.TTL <= 0 || ttl.TTL > 60 {
		t.Fatalf("time-to-live: granted %d remaining %d, want 60 and (0, 60]", ttl.GrantedTTL, ttl.TTL)
	}

	// Stop the leader: the other two elect one and go on.
	stoppedID := leader.m.ID()
	leader.m.Stop()
	leader.m = nil
	rest := []*testMember{}
	for _, tm := range tms {
		if tm.m != nil {
			rest = append(rest, tm)
		}
	}
	waitFor(t, "a new leader among the two left", func() bool {
		a, b := rest[0].m.state.Load().status.Lead, rest[1].m.state.Load().status.Lead
		return a != 0 && a != stoppedID && a == b
	})
	rc := newClient(t, rest...)
	waitFor(t, "a write after the leader stopped", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := rc.Put(cctx, "after", "leader-stop")
		return err == nil
	})
	get, err := rc.Get(ctx, "k29")
	if err != nil || len(get.Kvs) != 1 {
		t.Fatalf("read after the leader stopped: %v %v", get, err)
	}
}

// TestMemberAddJoinRemove adds a member with MemberAdd, starts it with
// --initial-cluster-state existing (it learns the cluster from a peer's
// GET /members and its state from the leader's snapshot), then removes it:
// the removed member stops with ErrRemoved.
func TestMemberAddJoinRemove(t *testing.T) {
	tms := startCluster(t, 1)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	for i := range 20 {
		if _, err := c.Put(ctx, fmt.Sprintf("before-%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	extra := newTestConfigs(t, 1)[0]
	extra.name = "joiner"
	extra.cfg.Name = "joiner"
	add, err := c.MemberAdd(ctx, []string{extra.peerURL})
	if err != nil {
		t.Fatal(err)
	}
	if add.Member.Name != "" || len(add.Members) != 2 {
		t.Fatalf("member add: %v with %d members, want an unstarted member of 2", add.Member, len(add.Members))
	}
	extra.cfg.InitialClusterState = ClusterStateExisting
	extra.cfg.InitialCluster = fmt.Sprintf("%s=%s,joiner=%s", tms[0].name, tms[0].peerURL, extra.peerURL)
	extra.cfg.InitialClusterToken = tms[0].cfg.InitialClusterToken
	extra.start(t)
	if extra.m.ID() != add.Member.ID || extra.m.ClusterID() != tms[0].m.ClusterID() {
		t.Fatalf("joined as %x of %x, want %x of %x", extra.m.ID(), extra.m.ClusterID(), add.Member.ID, tms[0].m.ClusterID())
	}
	all := append(tms, extra)
	waitLeader(t, all)
	ec := newClient(t, extra)
	get, err := ec.Get(ctx, "before-", clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the joined member to catch up", func() bool {
		get, err = ec.Get(ctx, "before-", clientv3.WithPrefix())
		return err == nil && len(get.Kvs) == 20
	})

	if _, err := c.MemberRemove(ctx, extra.m.ID()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-extra.m.Done():
	case <-time.After(waitMax):
		t.Fatal("removed member did not stop")
	}
	if !errors.Is(extra.m.Err(), ErrRemoved) {
		t.Fatalf("removed member stopped with %v, want %v", extra.m.Err(), ErrRemoved)
	}
	list, err := c.MemberList(ctx)
	if err != nil || len(list.Members) != 1 {
		t.Fatalf("member list after remove: %v %v", list, err)
	}
	if _, err := c.MemberRemove(ctx, extra.m.ID()); err != rpctypes.ErrMemberNotFound {
		t.Fatalf("removing it again: %v, want %v", err, rpctypes.ErrMemberNotFound)
	}
}

// TestRestartFromDataDir stops a member and starts it again from its data
// directory: it keeps its IDs and its data, and ignores --initial-cluster.
// A data directory of another cluster is refused.
func TestRestartFromDataDir(t *testing.T) {
	tms := startCluster(t, 1)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	var lastRev int64
	for i := range 50 {
		put, err := c.Put(ctx, fmt.Sprintf("key-%d", i), strings.Repeat("v", i))
		if err != nil {
			t.Fatal(err)
		}
		lastRev = put.Header.Revision
	}
	id, clusterID := tms[0].m.ID(), tms[0].m.ClusterID()
	tms[0].m.Stop()

	restart := tms[0].cfg
	restart.ClientListeners = nil
	restart.PeerListeners = nil
	cl, pl := listenLoopback(t), listenLoopback(t)
	restart.ClientListeners, restart.PeerListeners = append(restart.ClientListeners, cl), append(restart.PeerListeners, pl)
	cu := urlOf(t, cl)
	restart.AdvertiseClientURLs = []url.URL{cu}
	restart.InitialCluster = "somebody-else=http://127.0.0.1:1" // ignored: the data directory decides
	restart.InitialClusterState = ClusterStateExisting
	re := &testMember{name: tms[0].name, cfg: restart, clientURL: cu.String()}
	re.start(t)
	if re.m.ID() != id || re.m.ClusterID() != clusterID {
		t.Fatalf("restarted as %x of %x, want %x of %x", re.m.ID(), re.m.ClusterID(), id, clusterID)
	}
	waitLeader(t, []*testMember{re})
	rc := newClient(t, re)
	get, err := rc.Get(ctx, "key-", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(get.Kvs) != 50 || get.Header.Revision < lastRev {
		t.Fatalf("after restart: %d keys at revision %d, want 50 at >= %d", len(get.Kvs), get.Header.Revision, lastRev)
	}
	re.m.Stop()

	other := tms[0].cfg
	other.ClientListeners, other.PeerListeners = []stdnet.Listener{listenLoopback(t)}, []stdnet.Listener{listenLoopback(t)}
	other.InitialClusterToken = "another-cluster"
	other.InitialClusterState = ClusterStateNew
	m, err := Start(other)
	if err == nil {
		m.Stop()
		t.Fatal("a data directory of another cluster was accepted")
	}
	if !strings.Contains(err.Error(), "describe cluster") {
		t.Fatalf("refusal %q does not say the data directory is another cluster's", err)
	}
}

// TestMoveLeaderAndStatus moves leadership with Maintenance.MoveLeader and
// checks Status on every member names the new leader and etcd's version.
func TestMoveLeaderAndStatus(t *testing.T) {
	tms := startCluster(t, 3)
	leader, follower := leaderAndFollower(t, tms)
	ctx := testContext(t)
	lc := newClient(t, leader)
	if _, err := lc.MoveLeader(ctx, follower.m.ID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new leader to be known", func() bool {
		for _, tm := range tms {
			if tm.m.state.Load().status.Lead != follower.m.ID() {
				return false
			}
		}
		return true
	})
	for _, tm := range tms {
		st, err := newClient(t, tm).Status(ctx, tm.clientURL)
		if err != nil {
			t.Fatal(err)
		}
		if st.Leader != follower.m.ID() || st.Version != Version || st.Header.MemberId != tm.m.ID() {
			t.Fatalf("status of %s: leader %x version %s member %x", tm.name, st.Leader, st.Version, st.Header.MemberId)
		}
	}
	// Every member hashes the same state at the same revision.
	put, err := lc.Put(ctx, "hashed", "v")
	if err != nil {
		t.Fatal(err)
	}
	var hashes []uint32
	for _, tm := range tms {
		c := newClient(t, tm)
		waitFor(t, "the member to apply the put", func() bool {
			get, err := c.Get(ctx, "hashed", clientv3.WithSerializable())
			return err == nil && len(get.Kvs) == 1
		})
		hk, err := c.HashKV(ctx, tm.clientURL, put.Header.Revision)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, hk.Hash)
		if _, err := c.Defragment(ctx, tm.clientURL); err != nil {
			t.Fatalf("defragment: %v", err)
		}
	}
	if hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Fatalf("HashKV at revision %d differs across members: %x", put.Header.Revision, hashes)
	}
	fc := newClient(t, leader) // the old leader is a follower now
	if _, err := fc.MoveLeader(ctx, leader.m.ID()); err != rpctypes.ErrNotLeader {
		t.Fatalf("move-leader on a follower: %v, want %v", err, rpctypes.ErrNotLeader)
	}
}

// faultyFS is the OS's files with fsync failing on command.
type faultyFS struct {
	disk.FS
	failSyncs *atomic.Bool
}

type faultyFile struct {
	disk.File
	failSyncs *atomic.Bool
}

func (f faultyFS) wrap(file disk.File, err error) (disk.File, error) {
	if err != nil {
		return nil, err
	}
	return faultyFile{file, f.failSyncs}, nil
}

func (f faultyFS) Create(name string) (disk.File, error)     { return f.wrap(f.FS.Create(name)) }
func (f faultyFS) OpenAppend(name string) (disk.File, error) { return f.wrap(f.FS.OpenAppend(name)) }

func (f faultyFile) Sync() error {
	if f.failSyncs.Load() {
		return errors.New("injected fsync failure: input/output error")
	}
	return f.File.Sync()
}

// TestFsyncErrorStopsTheMember makes fsync fail under a write: the write
// is never acknowledged and the member stops with the disk error, as an
// fsync error may have lost data the OS had accepted.
func TestFsyncErrorStopsTheMember(t *testing.T) {
	tms := newTestConfigs(t, 1)
	var failSyncs atomic.Bool
	tms[0].cfg.FS = faultyFS{FS: disk.NewOSFS("/"), failSyncs: &failSyncs}
	tms[0].start(t)
	waitLeader(t, tms)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	if _, err := c.Put(ctx, "before", "ok"); err != nil {
		t.Fatal(err)
	}
	failSyncs.Store(true)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.Put(pctx, "during", "failing fsync"); err == nil {
		t.Fatal("a write whose fsync failed was acknowledged")
	}
	select {
	case <-tms[0].m.Done():
	case <-time.After(waitMax):
		t.Fatal("the member did not stop after an fsync error")
	}
	if err := tms[0].m.Err(); err == nil || !strings.Contains(err.Error(), "injected fsync failure") {
		t.Fatalf("member stopped with %v, want the fsync error", err)
	}
}

// TestRequireLeader: with etcd's hasleader metadata, requests and watch
// streams fail with ErrNoLeader on a member cut off from its quorum.
func TestRequireLeader(t *testing.T) {
	tms := startCluster(t, 3)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	tms[1].m.Stop()
	tms[2].m.Stop()
	waitFor(t, "the last member to lose its leader", func() bool { return !tms[0].m.state.Load().hasLeader() })
	rctx := clientv3.WithRequireLeader(ctx)
	if _, err := c.Get(rctx, "k"); err != rpctypes.ErrNoLeader {
		t.Fatalf("get with hasleader and no leader: %v, want %v", err, rpctypes.ErrNoLeader)
	}
	if get, err := c.Get(ctx, "k", clientv3.WithSerializable()); err != nil || len(get.Kvs) != 1 {
		t.Fatalf("serializable get without hasleader: %v %v", get, err)
	}
	wr := recvWatch(t, c.Watch(rctx, "k"))
	if wr.Err() != rpctypes.ErrNoLeader {
		t.Fatalf("watch with hasleader and no leader: %v, want %v", wr.Err(), rpctypes.ErrNoLeader)
	}
}

// TestLearnerPromoteAndUpdate adds a learner, starts it, promotes it once
// it has caught up, and updates its peer URLs.
func TestLearnerPromoteAndUpdate(t *testing.T) {
	tms := startCluster(t, 1)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	learner := newTestConfigs(t, 1)[0]
	learner.name, learner.cfg.Name = "learner", "learner"
	add, err := c.MemberAddAsLearner(ctx, []string{learner.peerURL})
	if err != nil {
		t.Fatal(err)
	}
	if !add.Member.IsLearner {
		t.Fatalf("added %v, want a learner", add.Member)
	}
	learner.cfg.InitialClusterState = ClusterStateExisting
	learner.cfg.InitialCluster = fmt.Sprintf("%s=%s,learner=%s", tms[0].name, tms[0].peerURL, learner.peerURL)
	learner.start(t)
	lc := newClient(t, learner)
	waitFor(t, "the learner to catch up", func() bool {
		get, err := lc.Get(ctx, "k", clientv3.WithSerializable())
		return err == nil && len(get.Kvs) == 1
	})
	if _, err := lc.Get(ctx, "k"); rpctypes.ErrorDesc(err) != "etcdserver: rpc not supported for learner" {
		t.Fatalf("linearizable read on a learner: %v, want etcd's rpc not supported for learner", err)
	}
	waitFor(t, "the promotion to be accepted", func() bool {
		_, err := c.MemberPromote(ctx, add.Member.ID)
		return err == nil
	})
	list, err := c.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, mem := range list.Members {
		if mem.IsLearner {
			t.Fatalf("after promotion: %v is still a learner", mem)
		}
	}
	if _, err := c.MemberUpdate(ctx, add.Member.ID, []string{learner.peerURL}); err != nil {
		t.Fatalf("member update: %v", err)
	}
	if _, err := c.MemberUpdate(ctx, add.Member.ID, []string{tms[0].peerURL}); err != rpctypes.ErrPeerURLExist {
		t.Fatalf("member update to another member's URL: %v, want %v", err, rpctypes.ErrPeerURLExist)
	}
}

// A member whose first start stopped before its first sync leaves a data
// directory with a WAL that holds no hard state: nothing at all, or (a torn
// write) the bootstrap entries without the hard state written after them.
// It never took part in the cluster, so it bootstraps again; restarting it
// would leave it with no configuration, and a one-member cluster would
// never elect a leader.
func TestFirstStartThatNeverSyncedBootstrapsAgain(t *testing.T) {
	for _, tc := range []struct {
		name string
		// entries the crash kept, written before a hard state it lost
		entries []*raftpb.Entry
	}{
		{name: "nothing kept"},
		{name: "bootstrap entry kept without its hard state",
			entries: []*raftpb.Entry{{Index: proto.Uint64(1), Term: proto.Uint64(1), Type: raftpb.EntryConfChange.Enum()}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tms := newTestConfigs(t, 1)
			tm := tms[0]
			_, self, clusterID, err := tm.cfg.bootstrapMembers()
			if err != nil {
				t.Fatal(err)
			}
			dataDir, err := filepath.Abs(tm.cfg.DataDir)
			if err != nil {
				t.Fatal(err)
			}
			rel := func(p string) string { return strings.TrimPrefix(filepath.ToSlash(p), "/") }
			st, err := disk.Create(disk.NewOSFS("/"), rel(filepath.Join(dataDir, "member", "wal")), rel(filepath.Join(dataDir, "member", "snap")),
				walMetadata(self, clusterID), disk.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(tc.entries) > 0 {
				if err := st.Append(nil, tc.entries); err != nil {
					t.Fatal(err)
				}
				if err := st.Sync(); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			tm.start(t)
			waitLeader(t, tms)
			if _, err := newClient(t, tm).Put(testContext(t), "k", "v"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSnapshotsUnderLoad: with a small --snapshot-count a member writes
// snapshot files on the snapshot goroutine while clients keep writing
// through the WAL, commits them, and releases what they cover; restarted,
// it recovers from the newest snapshot plus the log and has every write.
// Run under -race it also checks that the file writes share nothing with
// the disk goroutine's appends.
func TestSnapshotsUnderLoad(t *testing.T) {
	tms := newTestConfigs(t, 1)
	tms[0].cfg.SnapshotCount = 40
	tms[0].cfg.SnapshotCatchUpEntries = 10
	tms[0].start(t)
	waitLeader(t, tms)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	const writers, putsEach = 8, 60
	putConcurrently(t, ctx, c, writers, putsEach,
		func(w, i int) string { return fmt.Sprintf("w%d/k%03d", w, i) },
		func(_, i int) string { return strings.Repeat("v", 100+i) })
	m := tms[0].m
	waitFor(t, "snapshots saved", func() bool {
		return m.metrics.snapshotSave.count.Load() >= 3
	})
	m.Stop()
	snaps, err := os.ReadDir(filepath.Join(tms[0].cfg.DataDir, "member", "snap"))
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) == 0 || len(snaps) > 5 {
		t.Fatalf("%d snapshot files kept, want some and no more than the default kept", len(snaps))
	}
	for _, s := range snaps {
		if strings.HasSuffix(s.Name(), ".tmp") {
			t.Fatalf("temporary snapshot file %s left after a clean stop", s.Name())
		}
	}

	restart := tms[0].cfg
	cl, pl := listenLoopback(t), listenLoopback(t)
	restart.ClientListeners, restart.PeerListeners = []stdnet.Listener{cl}, []stdnet.Listener{pl}
	cu := urlOf(t, cl)
	restart.AdvertiseClientURLs = []url.URL{cu}
	re := &testMember{name: tms[0].name, cfg: restart, clientURL: cu.String()}
	re.start(t)
	waitLeader(t, []*testMember{re})
	get, err := newClient(t, re).Get(ctx, "w", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(get.Kvs) != writers*putsEach {
		t.Fatalf("after restart %d keys, want %d", len(get.Kvs), writers*putsEach)
	}
	for _, kv := range get.Kvs {
		var w, i int
		if _, err := fmt.Sscanf(string(kv.Key), "w%d/k%d", &w, &i); err != nil || len(kv.Value) != 100+i {
			t.Fatalf("key %q holds %d bytes", kv.Key, len(kv.Value))
		}
	}
}

package main

// Moving data between etcd and noded with real processes: etcd 3.4
// (Debian's /usr/bin/etcd) and etcd 3.7 (NODED_ETCD37_DIR: a directory
// holding etcd, etcdctl and etcdutl 3.7, as test.sh builds them) write a
// history; its snapshot restores into a noded cluster that then answers
// every read at every revision since the compaction as etcd did, leases
// included; noded's snapshot restores into etcd with the same result; a
// stopped etcd 3.7 cluster switches to noded in place and back; and
// etcdctl make-mirror copies keys both ways.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/noded/noded/cmd/internal/memberproc"
)

const (
	etcd34Binary = "/usr/bin/etcd"
	// shortLeaseTTL is the lease of the history that is to expire after a
	// restore: long enough to outlive the snapshot and the restore on a
	// loaded machine, short enough to wait out.
	shortLeaseTTL = 20
	longLeaseTTL  = 600
	// leaseExpiryWait bounds the wait for the short lease to expire after
	// a restore: its TTL counts from the first leader of the new cluster.
	leaseExpiryWait = shortLeaseTTL*time.Second + 60*time.Second
)

// requireNodedE2E skips tests that run noded's own commands beside etcd:
// against NODED_E2E_BINARY=etcd they have nothing to compare.
func requireNodedE2E(t *testing.T) {
	t.Helper()
	requireE2E(t)
	if os.Getenv("NODED_E2E_BINARY") != "" {
		t.Skip("e2e: these tests move data between noded and etcd; NODED_E2E_BINARY replaces noded")
	}
}

// etcdRelease is one etcd version's binaries.
type etcdRelease struct {
	name    string
	etcd    string
	etcdctl string // for `snapshot restore` with 3.4, which has no etcdutl
	etcdutl string
}

// etcdReleases are the etcd versions the snapshot tests run against.
var etcdReleases = []struct {
	name    string
	release func(*testing.T) etcdRelease
}{{"etcd3.4", etcd34}, {"etcd3.7", etcd37}}

func etcd34(t *testing.T) etcdRelease {
	t.Helper()
	if _, err := os.Stat(etcd34Binary); err != nil {
		t.Skipf("etcd 3.4 not found at %s (test.sh installs Debian's etcd-server)", etcd34Binary)
	}
	return etcdRelease{name: "3.4", etcd: etcd34Binary, etcdctl: etcdctlPath(t)}
}

func etcd37(t *testing.T) etcdRelease {
	t.Helper()
	dir := os.Getenv("NODED_ETCD37_DIR")
	r := etcdRelease{name: "3.7", etcd: filepath.Join(dir, "etcd"), etcdctl: filepath.Join(dir, "etcdctl"), etcdutl: filepath.Join(dir, "etcdutl")}
	for _, bin := range []string{r.etcd, r.etcdutl} {
		if _, err := os.Stat(bin); dir == "" || err != nil {
			t.Skipf("etcd 3.7 not found: set NODED_ETCD37_DIR to a directory holding etcd, etcdctl and etcdutl 3.7 "+
				"(test.sh builds them; or run shared/tools/etcd-anchors.sh DIR): %s", bin)
		}
	}
	return r
}

// planCluster lays out size members started by binary (flags, ports, data
// directories) without starting them; startAll starts them.
func planCluster(t *testing.T, binary string, size int, extraFlags ...string) *e2eCluster {
	t.Helper()
	dir := t.TempDir()
	ports := freePorts(t, 2*size)
	c := &e2eCluster{}
	var initial []string
	for i := 0; i < size; i++ {
		m := &e2eMember{
			name:      fmt.Sprintf("m%d", i),
			clientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
			log:       &logBuffer{},
			binary:    binary,
		}
		m.dataDir = filepath.Join(dir, m.name+".etcd")
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL)
	}
	token := fmt.Sprintf("e2e-%s-%d", sanitize(t.Name()), time.Now().UnixNano())
	for _, m := range c.members {
		m.args = append(memberproc.BootstrapArgs(m.name, m.dataDir, m.clientURL, m.peerURL, strings.Join(initial, ","), token), extraFlags...)
	}
	t.Cleanup(func() { c.teardown(t) })
	return c
}

// flag returns the value of --name= in m's flags.
func (m *e2eMember) flag(name string) string {
	for _, a := range m.args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

func (c *e2eCluster) startAll(t *testing.T) {
	t.Helper()
	for _, m := range c.members {
		m.start(t)
	}
	for _, m := range c.members {
		m.waitReady(t)
	}
}

// stop sends SIGTERM, as an operator stops a member, and waits for the
// exit.
func (m *e2eMember) stop(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.killedByTest = true
	m.mu.Unlock()
	if cmd == nil || isClosed(exited) {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("member %s (pid %d) did not stop 60s after SIGTERM", m.name, cmd.Process.Pid)
	}
}

// run runs a command to its end and returns its combined output.
func runCmd(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(memberproc.Env(), "ETCDCTL_API=3")
	cmd.SysProcAttr = memberproc.SysProcAttr()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runCmd(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// saveSnapshot saves endpoint's snapshot with etcdctl, as backups are made.
func saveSnapshot(t *testing.T, endpoint string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backup.db")
	res := etcdctl(t, []string{endpoint}, "", "snapshot", "save", path)
	if res.exitCode != 0 || !strings.Contains(res.stdout, "Snapshot saved at "+path) {
		t.Fatalf("etcdctl snapshot save: exit %d\n%s%s", res.exitCode, res.stdout, res.stderr)
	}
	return path
}

// restoreArgs are a restore's flags for member m of c, so that the
// restored member starts with m's flags.
func restoreArgs(m *e2eMember, snapshot string) []string {
	return []string{"snapshot", "restore", snapshot, "--name=" + m.name, "--data-dir=" + m.dataDir,
		"--initial-cluster=" + m.flag("initial-cluster"), "--initial-cluster-token=" + m.flag("initial-cluster-token"),
		"--initial-advertise-peer-urls=" + m.peerURL}
}

// restoreEtcd lays out c's members from a snapshot with release r's tool.
func restoreEtcd(t *testing.T, r etcdRelease, c *e2eCluster, snapshot string) {
	t.Helper()
	for _, m := range c.members {
		if r.etcdutl != "" {
			mustRun(t, r.etcdutl, restoreArgs(m, snapshot)...)
		} else {
			mustRun(t, r.etcdctl, restoreArgs(m, snapshot)...)
		}
	}
}

func restoreNoded(t *testing.T, c *e2eCluster, snapshot string) {
	t.Helper()
	for _, m := range c.members {
		mustRun(t, e2eBinary, restoreArgs(m, snapshot)...)
	}
}

// history is what writeHistory wrote.
type history struct {
	compactRev, lastRev int64
	longLease           clientv3.LeaseID
	shortLease          clientv3.LeaseID
}

// writeHistory writes puts, overwrites, deletes (single and ranges), txns
// (nested too), leases with keys attached, a compaction, and more writes
// after it.
func writeHistory(t *testing.T, cli *clientv3.Client) history {
	t.Helper()
	ctx := ctxTimeout(t)
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var h history
	for i := 0; i < 30; i++ {
		must(cli.Put(ctx, fmt.Sprintf("h/%02d", i%10), fmt.Sprintf("v%d", i)))
	}
	must(cli.Delete(ctx, "h/03"))
	must(cli.Delete(ctx, "h/05", clientv3.WithRange("h/08")))
	must(cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("h/01"), "=", "v21")).
		Then(clientv3.OpPut("t/a", "1"), clientv3.OpPut("t/b", "2"), clientv3.OpDelete("h/09")).
		Else(clientv3.OpPut("t/else", "x")).Commit())
	must(cli.Txn(ctx).If(clientv3.Compare(clientv3.Version("t/a"), ">", 0)).
		Then(clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpPut("t/nested", "n"), clientv3.OpDelete("t/b")}, nil)).Commit())
	long, err := cli.Grant(ctx, longLeaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	h.longLease = long.ID
	must(cli.Put(ctx, "l/a", "1", clientv3.WithLease(long.ID)))
	must(cli.Put(ctx, "l/b", "2", clientv3.WithLease(long.ID)))
	for i := 0; i < 5; i++ {
		must(cli.Put(ctx, fmt.Sprintf("h/%02d", i), fmt.Sprintf("w%d", i)))
	}
	put, err := cli.Put(ctx, "h/00", "before-compaction")
	if err != nil {
		t.Fatal(err)
	}
	h.compactRev = put.Header.Revision - 6
	must(cli.Compact(ctx, h.compactRev))
	short, err := cli.Grant(ctx, shortLeaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	h.shortLease = short.ID
	must(cli.Put(ctx, "s/a", "short-lived", clientv3.WithLease(short.ID)))
	must(cli.Put(ctx, "l/b", "detached"))
	must(cli.Put(ctx, "l/c", "3", clientv3.WithLease(long.ID)))
	must(cli.Put(ctx, "e/empty", ""))
	must(cli.Delete(ctx, "h/0", clientv3.WithPrefix()))
	last, err := cli.Put(ctx, "z/last", "end")
	if err != nil {
		t.Fatal(err)
	}
	h.lastRev = last.Header.Revision
	return h
}

// kvAt is one key at one revision, as a range returns it.
type kvAt struct {
	key, value                  string
	create, mod, version, lease int64
}

func kvsOf(kvs []*mvccpb.KeyValue) []kvAt {
	out := make([]kvAt, len(kvs))
	for i, kv := range kvs {
		out[i] = kvAt{string(kv.Key), string(kv.Value), kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease}
	}
	return out
}

type leaseAt struct {
	id         int64
	grantedTTL int64
	keys       []string
}

// answers are a cluster's answers to every read the comparisons make: the
// whole keyspace at every revision from the compaction to the last write,
// a read below the compaction and one past the current revision, and the
// leases.
type answers struct {
	h       history
	ranges  map[int64][]kvAt
	belowOK bool // the read below the compaction failed as compacted
	aboveOK bool // the read past the current revision failed as a future revision
	leases  []leaseAt
}

func readAnswers(t *testing.T, cli *clientv3.Client, h history) answers {
	t.Helper()
	ctx := ctxTimeout(t)
	a := answers{h: h, ranges: map[int64][]kvAt{}}
	for rev := h.compactRev; rev <= h.lastRev; rev++ {
		resp, err := cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatalf("range at %d: %v", rev, err)
		}
		a.ranges[rev] = kvsOf(resp.Kvs)
	}
	_, err := cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(h.compactRev-1))
	a.belowOK = errors.Is(err, rpctypes.ErrCompacted)
	// Past the current revision (a lease's expiry may have moved it past
	// the history's last write).
	now, err := cli.Get(ctx, "z/last")
	if err != nil {
		t.Fatal(err)
	}
	_, err = cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(now.Header.Revision+1))
	a.aboveOK = errors.Is(err, rpctypes.ErrFutureRev)
	leases, err := cli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases.Leases {
		ttl, err := cli.TimeToLive(ctx, l.ID, clientv3.WithAttachedKeys())
		if err != nil {
			t.Fatal(err)
		}
		la := leaseAt{id: int64(l.ID), grantedTTL: ttl.GrantedTTL}
		for _, k := range ttl.Keys {
			la.keys = append(la.keys, string(k))
		}
		sort.Strings(la.keys)
		a.leases = append(a.leases, la)
	}
	sort.Slice(a.leases, func(i, j int) bool { return a.leases[i].id < a.leases[j].id })
	return a
}

// sameAnswers compares two clusters' answers key by key, revision by
// revision, and names the first difference.
func sameAnswers(t *testing.T, what string, want, got answers) {
	t.Helper()
	if !want.belowOK || !want.aboveOK {
		t.Fatalf("the reference cluster did not refuse the reads outside the history (compacted %t, future %t)", want.belowOK, want.aboveOK)
	}
	if !got.belowOK || !got.aboveOK {
		t.Errorf("%s: a read below the compaction refused as compacted: %t; past the last revision as future: %t", what, got.belowOK, got.aboveOK)
	}
	for rev := want.h.compactRev; rev <= want.h.lastRev; rev++ {
		w, g := want.ranges[rev], got.ranges[rev]
		if !slices.Equal(w, g) {
			t.Fatalf("%s: the keyspace at revision %d differs:\nwant %v\ngot  %v", what, rev, w, g)
		}
	}
	if len(want.leases) != len(got.leases) {
		t.Fatalf("%s: leases %v, want %v", what, got.leases, want.leases)
	}
	for i := range want.leases {
		w, g := want.leases[i], got.leases[i]
		if w.id != g.id || w.grantedTTL != g.grantedTTL || !slices.Equal(w.keys, g.keys) {
			t.Fatalf("%s: lease %x: %+v, want %+v", what, w.id, g, w)
		}
	}
}

// checkLeaseSemantics checks, right after a cluster started on restored
// data, that the short lease still lives with its keys and its remaining
// TTL within its granted TTL, that the long one keeps alive, and that the
// short one then expires and takes its key with it.
func checkLeaseSemantics(t *testing.T, cli *clientv3.Client, h history) {
	t.Helper()
	ctx := ctxTimeout(t)
	short, err := cli.TimeToLive(ctx, h.shortLease, clientv3.WithAttachedKeys())
	// A new leader gives every lease its TTL plus an election timeout (1 s
	// in these clusters), as etcd's lessor does when promoted: right after
	// the election the time to live reads up to that much above the TTL.
	if err != nil || short.TTL <= 0 || short.TTL > shortLeaseTTL+1 || short.GrantedTTL != shortLeaseTTL || len(short.Keys) != 1 {
		if err == nil {
			t.Fatalf("the short lease after the restore: TTL %d s, granted %d s, %d keys (granted %d s; it must still live with its key)",
				short.TTL, short.GrantedTTL, len(short.Keys), shortLeaseTTL)
		}
		t.Fatalf("the short lease after the restore: %v", err)
	}
	if _, err := cli.KeepAliveOnce(ctx, h.longLease); err != nil {
		t.Fatalf("keepalive of the long lease: %v", err)
	}
	deadline := time.Now().Add(leaseExpiryWait)
	for {
		resp, err := cli.Get(ctxTimeout(t), "s/a")
		if err == nil && len(resp.Kvs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the short lease's key outlived its %d s TTL by more than %v: %v %v", shortLeaseTTL, leaseExpiryWait, resp, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if ttl, err := cli.TimeToLive(ctxTimeout(t), h.shortLease); err != nil || ttl.TTL != -1 {
		t.Fatalf("the expired short lease still lives: %+v %v", ttl, err)
	}
	long, err := cli.TimeToLive(ctxTimeout(t), h.longLease, clientv3.WithAttachedKeys())
	if err != nil || long.TTL <= 0 || len(long.Keys) != 2 {
		t.Fatalf("the long lease: %+v %v", long, err)
	}
}

// compareThroughEvery compares the answers of every member of c.
func compareThroughEvery(t *testing.T, c *e2eCluster, want answers, what string) {
	t.Helper()
	for _, m := range c.members {
		cli := c.client(t, m.clientURL)
		sameAnswers(t, fmt.Sprintf("%s, through %s", what, m.name), want, readAnswers(t, cli, want.h))
	}
}

func TestE2EEtcdSnapshotRestoresIntoNoded(t *testing.T) {
	requireNodedE2E(t)
	for _, rel := range etcdReleases {
		t.Run(rel.name, func(t *testing.T) {
			r := rel.release(t)
			src := planCluster(t, r.etcd, 1)
			src.startAll(t)
			cli := src.client(t)
			h := writeHistory(t, cli)
			want := readAnswers(t, cli, h)
			snapshot := saveSnapshot(t, src.members[0].clientURL)
			src.members[0].stop(t)

			if r.etcdutl != "" {
				// noded reads the file as etcdutl does.
				theirs := mustRun(t, r.etcdutl, "snapshot", "status", snapshot, "-w", "json")
				ours := mustRun(t, e2eBinary, "snapshot", "status", snapshot, "-w", "json")
				if strings.TrimSpace(theirs) != strings.TrimSpace(ours) {
					t.Fatalf("snapshot status: etcdutl says %s, noded says %s", theirs, ours)
				}
			}
			dst := planCluster(t, "", 3)
			restoreNoded(t, dst, snapshot)
			dst.startAll(t)
			dcli := dst.client(t)
			checkLeaseSemantics(t, dcli, h)
			// The short lease has expired since: compare the rest.
			want.leases = slices.DeleteFunc(want.leases, func(l leaseAt) bool { return l.id == int64(h.shortLease) })
			compareThroughEvery(t, dst, want, "noded restored from etcd "+r.name)
		})
	}
}

func TestE2ENodedSnapshotRestoresIntoEtcd(t *testing.T) {
	requireNodedE2E(t)
	src := newCluster(t, 3)
	cli := src.client(t)
	h := writeHistory(t, cli)
	want := readAnswers(t, cli, h)
	snapshot := saveSnapshot(t, src.members[1].clientURL)
	for _, m := range src.members {
		m.stop(t)
	}
	for _, rel := range etcdReleases {
		t.Run(rel.name, func(t *testing.T) {
			r := rel.release(t)
			// etcd's tools read it as theirs.
			if r.etcdutl != "" {
				out := mustRun(t, r.etcdutl, "snapshot", "status", snapshot, "-w", "json")
				ours := mustRun(t, e2eBinary, "snapshot", "status", snapshot, "-w", "json")
				if strings.TrimSpace(out) != strings.TrimSpace(ours) {
					t.Fatalf("snapshot status: etcdutl says %s, noded says %s", out, ours)
				}
			} else {
				mustRun(t, r.etcdctl, "snapshot", "status", snapshot, "-w", "json")
			}
			dst := planCluster(t, r.etcd, 1)
			restoreEtcd(t, r, dst, snapshot)
			dst.startAll(t)
			dcli := dst.client(t)
			checkLeaseSemantics(t, dcli, h)
			w := want
			w.leases = slices.DeleteFunc(slices.Clone(want.leases), func(l leaseAt) bool { return l.id == int64(h.shortLease) })
			compareThroughEvery(t, dst, w, "etcd "+r.name+" restored from noded")
		})
	}
}

// hashTree hashes every file under dir (name and contents), to show a
// directory was not changed.
func hashTree(t *testing.T, dir string, skip func(rel string) bool) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = sha256.Sum256(data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestE2EInPlaceSwitchFromEtcd37AndBack(t *testing.T) {
	requireNodedE2E(t)
	r := etcd37(t)
	// A long backend batch interval keeps etcd's database behind its WAL
	// on the member killed below, so that the switch replays etcd's log.
	c := planCluster(t, r.etcd, 3, "--backend-batch-interval=1h", "--backend-batch-limit=1000000")
	c.startAll(t)
	cli := c.client(t)
	h := writeHistory(t, cli)
	want := readAnswers(t, cli, h)
	// The runbook: stop every member. One stops the hard way.
	c.members[2].kill(t)
	c.members[0].stop(t)
	c.members[1].stop(t)
	notNoded := func(rel string) bool { return rel == filepath.Join("member", "noded") }
	before := make([]map[string][32]byte, len(c.members))
	for i, m := range c.members {
		before[i] = hashTree(t, m.dataDir, notNoded)
	}

	// Start noded with the same flags on the same directories.
	for _, m := range c.members {
		m.binary = ""
	}
	c.startAll(t)
	replayed := false
	for _, m := range c.members {
		var conv struct {
			ConsistentIndex uint64 `json:"consistent-index"`
			LastIndex       uint64 `json:"last-index"`
		}
		line := logLine(m.log.tail(logKeepBytes), "converted an etcd member's data directory")
		if line == "" || json.Unmarshal([]byte(line), &conv) != nil {
			t.Fatalf("member %s did not say it converted etcd's data directory", m.name)
		}
		t.Logf("%s: etcd's database applied index %d, its WAL ends at %d", m.name, conv.ConsistentIndex, conv.LastIndex)
		replayed = replayed || conv.LastIndex > conv.ConsistentIndex
	}
	if !replayed {
		t.Fatal("no member's WAL held entries past its database: the conversion's replay of etcd's log went untested")
	}
	ncli := c.client(t)
	checkLeaseSemantics(t, ncli, h)
	want.leases = slices.DeleteFunc(want.leases, func(l leaseAt) bool { return l.id == int64(h.shortLease) })
	compareThroughEvery(t, c, want, "noded on etcd 3.7's directories")
	// Every member, the killed one that replayed etcd's log included, holds
	// the same history.
	st, err := ncli.Status(ctxTimeout(t), c.members[0].clientURL)
	if err != nil {
		t.Fatal(err)
	}
	var hashes []uint32
	for _, m := range c.members {
		resp, err := ncli.HashKV(ctxTimeout(t), m.clientURL, st.Header.Revision)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, resp.Hash)
	}
	if hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Fatalf("members hash their history at %d differently: %x", st.Header.Revision, hashes)
	}
	for i, m := range c.members {
		if after := hashTree(t, m.dataDir, notNoded); !maps.Equal(before[i], after) {
			t.Fatalf("etcd's files of %s changed", m.name)
		}
	}

	// noded writes on, then the cluster goes back to etcd from a noded
	// snapshot, by etcd's restore runbook.
	h2 := h
	for i := 0; i < 10; i++ {
		put, err := ncli.Put(ctxTimeout(t), fmt.Sprintf("n/%d", i), "written-by-noded")
		if err != nil {
			t.Fatal(err)
		}
		h2.lastRev = put.Header.Revision
	}
	want2 := readAnswers(t, ncli, h2)
	snapshot := saveSnapshot(t, c.members[0].clientURL)
	for _, m := range c.members {
		m.stop(t)
	}
	back := planCluster(t, r.etcd, 3)
	restoreEtcd(t, r, back, snapshot)
	back.startAll(t)
	compareThroughEvery(t, back, want2, "etcd 3.7 restored from noded")
}

// logLine returns the last line of log containing s.
func logLine(log, s string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], s) {
			return lines[i]
		}
	}
	return ""
}

// TestE2EMakeMirror mirrors keys from etcd to noded and from noded to etcd
// with etcdctl make-mirror, which works on the client side: it reads the
// source's keyspace at a revision, then watches on from it.
func TestE2EMakeMirror(t *testing.T) {
	requireNodedE2E(t)
	r := etcd34(t)
	etcd := planCluster(t, r.etcd, 1)
	etcd.startAll(t)
	noded := newCluster(t, 1)
	ecli, ncli := etcd.client(t), noded.client(t)
	for _, tc := range []struct {
		name     string
		from, to *clientv3.Client
		fromURL  string
		toURL    string
		prefix   string
	}{
		{"etcd to noded", ecli, ncli, etcd.members[0].clientURL, noded.members[0].clientURL, "to-noded/"},
		{"noded to etcd", ncli, ecli, noded.members[0].clientURL, etcd.members[0].clientURL, "to-etcd/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxTimeout(t)
			for i := 0; i < 20; i++ {
				if _, err := tc.from.Put(ctx, fmt.Sprintf("%s%02d", tc.prefix, i), fmt.Sprint("before-", i)); err != nil {
					t.Fatal(err)
				}
			}
			mctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cmd := etcdctlCommand(mctx, t, []string{tc.fromURL}, "make-mirror", "--prefix="+tc.prefix, tc.toURL)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cancel(); cmd.Wait() }()
			// Writes while it runs: new keys, overwrites, a delete.
			for i := 10; i < 30; i++ {
				if _, err := tc.from.Put(ctx, fmt.Sprintf("%s%02d", tc.prefix, i), fmt.Sprint("during-", i)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := tc.from.Delete(ctx, tc.prefix+"05"); err != nil {
				t.Fatal(err)
			}
			want, err := tc.from.Get(ctx, tc.prefix, clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(startTimeout)
			for {
				got, err := tc.to.Get(ctxTimeout(t), tc.prefix, clientv3.WithPrefix())
				if err == nil && sameKeysAndValues(want.Kvs, got.Kvs) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the mirror did not catch up in %v: source %d keys, mirror %v (%v)\nmake-mirror said: %s",
						startTimeout, len(want.Kvs), got, err, out.String())
				}
				time.Sleep(300 * time.Millisecond)
			}
		})
	}
}

func sameKeysAndValues(a, b []*mvccpb.KeyValue) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Key, b[i].Key) || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

// TestE2ESnapshotRestoreRefusesBadInput: each refusal names the problem,
// exits 1 as etcdutl does, and leaves no data directory behind.
func TestE2ESnapshotRestoreRefusesBadInput(t *testing.T) {
	requireNodedE2E(t)
	good, err := os.ReadFile(filepath.Join("..", "..", "disk", "etcdformat", "testdata", "etcd-3.7.snapshot"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := slices.Clone(good)
	flipped[len(good)-sha256.Size-100] ^= 0x01 // in the last page: free space
	for _, tc := range []struct {
		name  string
		file  string
		flags []string
		want  string // "" means it succeeds
	}{
		{"truncated", write("truncated", good[:len(good)/2]), nil, "snapshot missing hash but --skip-hash-check=false"},
		{"hash mismatch", write("flipped", flipped), nil, "snapshot hash mismatch"},
		{"hash mismatch, hash check skipped", write("flipped2", flipped), []string{"--skip-hash-check"}, ""},
		{"not a snapshot", write("text", bytes.Repeat([]byte("not a database\n"), 1000)), []string{"--skip-hash-check"}, "not an etcd database"},
		{"missing", filepath.Join(dir, "missing"), nil, "no such file"},
		{"bump without mark", write("good", good), []string{"--bump-revision=10"}, "--mark-compacted required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(dir, sanitize(tc.name)+".etcd")
			args := append([]string{"snapshot", "restore", tc.file, "--data-dir=" + dataDir}, tc.flags...)
			out, err := runCmd(t, e2eBinary, args...)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("restore failed: %v\n%s", err, out)
				}
				if _, err := os.Stat(filepath.Join(dataDir, "member", "wal")); err != nil {
					t.Fatalf("no WAL after the restore: %v", err)
				}
				return
			}
			var exitErr *exec.ExitError
			if !errors.As(err, &exitErr) || !strings.Contains(out, "Error: ") || !strings.Contains(out, tc.want) {
				t.Fatalf("got %v:\n%s\nwant an Error: line saying %q", err, out, tc.want)
			}
			if code := exitErr.ExitCode(); code != 1 && code != 128 {
				t.Fatalf("exit code %d", code)
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("the refused restore left %s: %v", dataDir, err)
			}
		})
	}
}

// TestE2ESwitchRefusesARunningMember: noded started on the data directory
// of an etcd member that still runs refuses, says why, and writes nothing.
func TestE2ESwitchRefusesARunningMember(t *testing.T) {
	requireNodedE2E(t)
	r := etcd34(t)
	c := planCluster(t, r.etcd, 1)
	c.startAll(t)
	m := c.members[0]
	ports := freePorts(t, 2)
	// The same member, as noded, on other ports: what an operator who
	// forgot to stop etcd would start.
	args := slices.Clone(m.args)
	for i, a := range args {
		switch {
		case strings.HasPrefix(a, "--listen-client-urls="), strings.HasPrefix(a, "--advertise-client-urls="):
			args[i] = a[:strings.Index(a, "=")+1] + fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		case strings.HasPrefix(a, "--listen-peer-urls="):
			args[i] = a[:strings.Index(a, "=")+1] + fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		}
	}
	out, err := runCmd(t, e2eBinary, args...)
	if err == nil || !strings.Contains(out, "still running") {
		t.Fatalf("noded on a running etcd member's directory: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(m.dataDir, "member", "noded")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("noded wrote into the running member's directory: %v", err)
	}
	// etcd is unharmed.
	if _, err := c.client(t).Put(ctxTimeout(t), "still", "serving"); err != nil {
		t.Fatal(err)
	}
}

package etcddata

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/disk"
	"github.com/noded/noded/disk/etcdformat"
	"github.com/noded/noded/kvsm"
	"github.com/noded/noded/node"
)

// The fixtures are real etcd's, shared with disk/etcdformat (its
// testdata/gen.sh makes them).
func fixture(name string) string {
	return filepath.Join("..", "..", "disk", "etcdformat", "testdata", name)
}

var fixtureVersions = []string{"3.4", "3.7"}

// threeMembers is a new cluster as --initial-cluster describes it.
func threeMembers() (members []node.Member, clusterID uint64) {
	var ids []uint64
	for i := 1; i <= 3; i++ {
		urls := []string{fmt.Sprintf("http://10.0.0.%d:2380", i)}
		id := node.MemberID(urls, "restored", nil)
		members = append(members, node.Member{ID: id, Name: fmt.Sprintf("m%d", i), PeerURLs: urls})
		ids = append(ids, id)
	}
	return members, node.ClusterID(ids)
}

func restoreConfig(fsys disk.FS, snapshot string, members []node.Member, self int, clusterID uint64) RestoreConfig {
	dataDir := fmt.Sprintf("data/%s", members[self].Name)
	return RestoreConfig{
		SnapshotPath: snapshot, Members: members, MemberID: members[self].ID, ClusterID: clusterID,
		FS: fsys, DataDir: dataDir, WALDir: dataDir + "/member/wal", SnapDir: dataDir + "/member/snap",
		Options: disk.Options{SegmentSizeBytes: 4096},
	}
}

// opened is what a member starting on a data directory finds.
type opened struct {
	memberID, clusterID uint64
	stateHash           uint64
	index, term         uint64
	hardState           string
	entries             []*raftpb.Entry
	status              node.Status
}

func (o opened) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "member %x cluster %x state %016x at %d/%d hs %s entries", o.memberID, o.clusterID, o.stateHash, o.index, o.term, o.hardState)
	for _, e := range o.entries {
		fmt.Fprintf(&b, " %d/%d:%x", e.GetIndex(), e.GetTerm(), e.GetData())
	}
	fmt.Fprintf(&b, " members %v", o.status.Members)
	return b.String()
}

// openMember opens the WAL and snapshots in walDir and snapDir, and
// restarts a node from them, as a member's start does.
func openMember(t *testing.T, fsys disk.FS, walDir, snapDir string) opened {
	t.Helper()
	st, rec, err := disk.Open(fsys, walDir, snapDir, disk.Options{SegmentSizeBytes: 4096})
	if err != nil {
		t.Fatalf("open %s: %v", walDir, err)
	}
	defer st.Close()
	if len(rec.Metadata) != 16 {
		t.Fatalf("WAL metadata of %d bytes", len(rec.Metadata))
	}
	o := opened{
		memberID:  beUint64(rec.Metadata[:8]),
		clusterID: beUint64(rec.Metadata[8:]),
		index:     rec.Snapshot.GetMetadata().GetIndex(),
		term:      rec.Snapshot.GetMetadata().GetTerm(),
		hardState: fmt.Sprintf("%d/%d/%d", rec.HardState.GetTerm(), rec.HardState.GetVote(), rec.HardState.GetCommit()),
		entries:   rec.Entries,
	}
	n, err := node.Restart(node.Config{ID: o.memberID, ClusterID: o.clusterID}, node.Durable{Snapshot: rec.Snapshot, HardState: rec.HardState, Entries: rec.Entries})
	if err != nil {
		t.Fatalf("restart a node from %s: %v", walDir, err)
	}
	o.stateHash, o.status = n.StateHash(), n.Status()
	return o
}

func beUint64(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// applyEntries applies the v3 requests of entries to the state a member
// restarted with, as the member will once raft commits them, and returns
// the live keys then.
func liveKeysAfter(t *testing.T, fsys disk.FS, walDir, snapDir string) []string {
	t.Helper()
	st, rec, err := disk.Open(fsys, walDir, snapDir, disk.Options{SegmentSizeBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := node.Restart(node.Config{ID: 1}, node.Durable{Snapshot: rec.Snapshot})
	if err != nil {
		t.Fatal(err)
	}
	s := n.Store()
	for _, e := range rec.Entries {
		if e.GetType() != raftpb.EntryNormal || len(e.GetData()) == 0 {
			continue
		}
		var r pb.InternalRaftRequest
		if err := proto.Unmarshal(e.GetData(), &r); err != nil {
			t.Fatal(err)
		}
		if r.GetClusterMemberAttrSet() == nil {
			s.Apply(&r)
		}
	}
	resp, _ := s.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, KeysOnly: true})
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// copyIntoSim copies an OS directory tree's files into fsys under dst,
// synced.
func copyIntoSim(t *testing.T, fsys disk.FS, src disk.FS, srcDir, dst string) {
	t.Helper()
	files, _, err := listTree(src, srcDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		rel := strings.TrimPrefix(f, srcDir)
		name := dst + rel
		if err := fsys.MkdirAll(parentDir(name)); err != nil {
			t.Fatal(err)
		}
		data := readAll(t, src, f)
		w, err := fsys.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		// The file's entry and every directory above it, durably.
		for d := parentDir(name); ; d = parentDir(d) {
			if err := fsys.SyncDir(d); err != nil {
				t.Fatal(err)
			}
			if d == "." {
				break
			}
		}
	}
}

func parentDir(name string) string {
	if i := strings.LastIndex(name, "/"); i >= 0 {
		return name[:i]
	}
	return "."
}

func readAll(t *testing.T, fsys disk.FS, name string) []byte {
	t.Helper()
	data, err := disk.ReadFile(fsys, name, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// snapshotOf reads the files under dir of fsys into a map, to show they
// did not change.
func snapshotOf(t *testing.T, fsys disk.FS, dir string) map[string]string {
	t.Helper()
	files, _, err := listTree(fsys, dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range files {
		out[f] = string(readAll(t, fsys, f))
	}
	return out
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

// crashSweep runs act on a fresh FS from setup, halted after each number
// of FS operations from 0 to total, crashes the FS in every crash mode
// (two seeds each), and has check say what a member starting there finds:
// it names the outcome, or fails. It returns how often each outcome came.
func crashSweep(total int64, setup func() *disk.SimFS, act func(*disk.SimFS) error, check func(*disk.SimFS) (string, error)) (map[string]int, error) {
	outcomes := map[string]int{}
	for k := int64(0); k <= total; k++ {
		for _, mode := range disk.CrashModes {
			for seed := uint64(0); seed < 2; seed++ {
				name := fmt.Sprintf("op %d of %d, %s, seed %d", k, total, mode, seed)
				fsys := setup()
				fsys.HaltAfterOps(k)
				if err := act(fsys); k < total && !errors.Is(err, disk.ErrHalted) {
					return outcomes, fmt.Errorf("%s: ended with %v, want ErrHalted", name, err)
				}
				fsys.Crash(newRand(uint64(k)*10+uint64(mode)*3+seed), mode)
				outcome, err := check(fsys)
				if err != nil {
					return outcomes, fmt.Errorf("%s: %v", name, err)
				}
				outcomes[outcome]++
			}
		}
	}
	return outcomes, nil
}

// plantWALFirst makes writes lay their files out the ordinary way, WAL
// first (naiveCreateWAL), until the test ends: the planted bug the crash
// sweeps exist to catch.
func plantWALFirst(t *testing.T) {
	saved := createWAL
	createWAL = naiveCreateWAL
	t.Cleanup(func() { createWAL = saved })
}

// naiveCreateWAL lays the same files out the ordinary way, WAL first.
func naiveCreateWAL(fsys disk.FS, walDir, snapDir string, metadata []byte, snap *raftpb.Snapshot,
	hs *raftpb.HardState, ents []*raftpb.Entry, opts disk.Options) (*disk.Storage, error) {
	s, err := disk.Create(fsys, walDir, snapDir, metadata, opts)
	if err != nil {
		return nil, err
	}
	if err := s.SaveSnapshot(snap); err != nil {
		return nil, err
	}
	if err := s.Append(hs, ents); err != nil {
		return nil, err
	}
	return s, s.Sync()
}

func readState(t *testing.T, path string) *kvsm.Store {
	t.Helper()
	_, s, err := ReadSnapshot(path, etcdformat.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ids(ms []node.Member) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	slices.Sort(out)
	return out
}

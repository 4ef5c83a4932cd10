package etcddata

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/disk"
	"github.com/noded/noded/disk/etcdformat"
	"github.com/noded/noded/kvsm"
)

func TestRestoreLaysOutEveryMember(t *testing.T) {
	for _, v := range fixtureVersions {
		t.Run(v, func(t *testing.T) {
			snap := fixture("etcd-" + v + ".snapshot")
			want := readState(t, snap)
			members, clusterID := threeMembers()
			fsys := disk.NewSimFS()
			var first opened
			for i := range members {
				cfg := restoreConfig(fsys, snap, members, i, clusterID)
				r, err := Restore(cfg)
				if err != nil {
					t.Fatal(err)
				}
				if r.Revision != 29 || r.Keys != 5 || r.Leases != 2 {
					t.Fatalf("restored %+v", r)
				}
				o := openMember(t, fsys, cfg.WALDir, cfg.SnapDir)
				if o.memberID != members[i].ID || o.clusterID != clusterID || o.stateHash != want.StateHash() ||
					o.index != 3 || o.term != 1 || o.hardState != "1/0/3" || len(o.entries) != 0 {
					t.Fatalf("member %d opens as %s", i, o)
				}
				got := o.status.Members
				if len(got) != 3 || got[0].Name == "" || !slices.Equal(ids(got), ids(members)) {
					t.Fatalf("member table %v", got)
				}
				if i == 0 {
					first = o
				} else if o.stateHash != first.stateHash {
					t.Fatal("members restored from one snapshot differ")
				}
			}
		})
	}
}

func TestRestoreBumpsAndCompacts(t *testing.T) {
	members, clusterID := threeMembers()
	fsys := disk.NewSimFS()
	cfg := restoreConfig(fsys, fixture("etcd-3.7.snapshot"), members, 0, clusterID)
	cfg.BumpRevision, cfg.MarkCompacted = 1000, true
	r, err := Restore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Revision != 1029 || r.CompactRevision != 1029 || r.Keys != 5 {
		t.Fatalf("restored %+v", r)
	}
	cfg = restoreConfig(disk.NewSimFS(), fixture("etcd-3.7.snapshot"), members, 0, clusterID)
	cfg.BumpRevision = 5
	if _, err := Restore(cfg); err == nil || !strings.Contains(err.Error(), "--mark-compacted") {
		t.Fatalf("a bump without --mark-compacted: %v", err)
	}
}

func TestRestoreRefusesAndWritesNothing(t *testing.T) {
	members, clusterID := threeMembers()
	dir := t.TempDir()
	good, err := os.ReadFile(fixture("etcd-3.7.snapshot"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := slices.Clone(good)
	flipped[len(good)/3] ^= 1
	withUsers := filepath.Join(dir, "users")
	{
		st := readState(t, fixture("etcd-3.7.snapshot"))
		src := sourceOf(st.View(), st.Leases(), nil)
		src.Auth = etcdformat.Auth{Enabled: true, Users: []*authpb.User{{Name: []byte("u")}}}
		err := etcdformat.WriteSnapshotFile(withUsers, src)
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name     string
		snapshot string
		prepare  func(fsys disk.FS)
		skip     bool
		want     string
	}{
		{"truncated", write("truncated", good[:len(good)-1000]), nil, false, "missing hash"},
		{"hash mismatch", write("flipped", flipped), nil, false, "hash mismatch"},
		{"not a snapshot", write("text", []byte(strings.Repeat("hello\n", 2000))), nil, true, "not an etcd database"},
		{"auth on without a root user", withUsers, nil, false, "root user"},
		{"a data directory in use", fixture("etcd-3.7.snapshot"), func(fsys disk.FS) {
			fsys.MkdirAll("data/m1")
			f, _ := fsys.Create("data/m1/notes.txt")
			f.Close()
		}, false, "not empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := disk.NewSimFS()
			if tc.prepare != nil {
				tc.prepare(fsys)
			}
			before := snapshotOf(t, fsys, "data")
			cfg := restoreConfig(fsys, tc.snapshot, members, 0, clusterID)
			cfg.SkipHashCheck = tc.skip
			_, err := Restore(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
			if after := snapshotOf(t, fsys, "data"); !maps.Equal(before, after) {
				t.Fatalf("the refused restore wrote %v", after)
			}
		})
	}
	// A member that is not one of the new cluster's.
	cfg := restoreConfig(disk.NewSimFS(), fixture("etcd-3.7.snapshot"), members, 0, clusterID)
	cfg.MemberID = 12345
	if _, err := Restore(cfg); err == nil || !strings.Contains(err.Error(), "not in the initial cluster") {
		t.Fatalf("a member outside the cluster: %v", err)
	}
}

// TestRestoreCrashSweep crashes a restore after every FS operation, in
// every crash mode, and checks what a member starting there finds: either
// nothing it would start from (Prepare refuses a directory holding
// snapshot files without a WAL, and a new restore completes), or the
// whole restored state. Never a member that starts with part of it.
func TestRestoreCrashSweep(t *testing.T) {
	total, outcomes, err := restoreSweep(t)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d FS operations; after a crash: %v", total, outcomes)
	if outcomes["nothing"] == 0 || outcomes["refused"] == 0 || outcomes["whole"] == 0 {
		t.Fatalf("the sweep missed an outcome: %v", outcomes)
	}
}

func TestRestoreCrashSweepCatchesAWALWrittenFirst(t *testing.T) {
	plantWALFirst(t)
	_, _, err := restoreSweep(t)
	if err == nil {
		t.Fatal("the sweep passed a restore whose WAL appears before its contents")
	}
	t.Logf("caught: %v", err)
}

func restoreSweep(t *testing.T) (int64, map[string]int, error) {
	t.Helper()
	members, clusterID := threeMembers()
	snap := fixture("etcd-3.4.snapshot")
	want := readState(t, snap).StateHash()
	clean := disk.NewSimFS()
	if _, err := Restore(restoreConfig(clean, snap, members, 0, clusterID)); err != nil {
		return 0, nil, err
	}
	total := clean.OpsCount()
	outcomes, err := crashSweep(total, disk.NewSimFS,
		func(fsys *disk.SimFS) error {
			_, err := Restore(restoreConfig(fsys, snap, members, 0, clusterID))
			return err
		},
		func(fsys *disk.SimFS) (string, error) {
			cfg := restoreConfig(fsys, snap, members, 0, clusterID)
			outcome := "whole"
			if !disk.Exists(fsys, cfg.WALDir) {
				// Not restored: a member must not start here, and a new
				// restore must work.
				if _, err := Prepare(PrepareConfig{FS: fsys, DataDir: cfg.DataDir, WALDir: cfg.WALDir, SnapDir: cfg.SnapDir}); err != nil {
					outcome = "refused"
				} else {
					files, _, _ := listTree(fsys, cfg.SnapDir)
					if slices.ContainsFunc(files, func(f string) bool { return strings.HasSuffix(f, ".snap") }) {
						return "", fmt.Errorf("a member would start on a directory holding only %v", files)
					}
					outcome = "nothing"
				}
				if _, err := Restore(cfg); err != nil {
					return "", fmt.Errorf("restoring again after the crash: %v", err)
				}
			}
			st, rec, err := disk.Open(fsys, cfg.WALDir, cfg.SnapDir, cfg.Options)
			if err != nil {
				return "", fmt.Errorf("open: %v", err)
			}
			st.Close()
			if rec.Snapshot == nil {
				return "", errors.New("the restored member opens with no snapshot: it would start empty")
			}
			if o := openMember(t, fsys, cfg.WALDir, cfg.SnapDir); o.stateHash != want || o.index != 3 || o.hardState != "1/0/3" {
				return "", fmt.Errorf("the member opens as %s", o)
			}
			return outcome, nil
		})
	return total, outcomes, err
}

// BenchmarkRestore restores a snapshot of NODED_BENCH_KEYS keys (default
// 100000) into a data directory on the operating system's disk, as
// `noded snapshot restore` does.
func BenchmarkRestore(b *testing.B) {
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("NODED_BENCH_KEYS")); err == nil && v > 0 {
		n = v
	}
	s := kvsm.New(kvsm.Config{})
	value := make([]byte, 100)
	for i := 0; i < n; i++ {
		s.Apply(&pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(fmt.Sprintf("snapshot/%010d", i)), Value: value}})
	}
	dir := b.TempDir()
	snap := filepath.Join(dir, "snap")
	if err := etcdformat.WriteSnapshotFile(snap, sourceOf(s.View(), nil, nil)); err != nil {
		b.Fatal(err)
	}
	members, clusterID := threeMembers()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out := fmt.Sprintf("%s/out%d", strings.TrimPrefix(dir, "/"), i)
		cfg := RestoreConfig{SnapshotPath: snap, Members: members, MemberID: members[0].ID, ClusterID: clusterID,
			FS: disk.NewOSFS("/"), DataDir: out, WALDir: out + "/member/wal", SnapDir: out + "/member/snap"}
		if _, err := Restore(cfg); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll("/" + out)
		b.StartTimer()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "keys/s")
}

// Users, roles, their permissions and whether auth is on go into etcd's
// auth buckets and come back out as they were: a restored cluster asks
// for the same credentials and grants the same keys.
func TestAuthRoundTrip(t *testing.T) {
	b := kvsm.NewBuilder(storeConfig)
	want := kvsm.AuthExport{
		Enabled:  true,
		Revision: 17,
		Users: []*authpb.User{
			{Name: []byte("alice"), Password: []byte("$2a$10$hash"), Roles: []string{"app"}},
			{Name: []byte("root"), Password: []byte("$2a$10$root"), Roles: []string{"root"}},
			{Name: []byte("svc"), Roles: []string{"app"}, Options: &authpb.UserAddOptions{NoPassword: true}},
		},
		Roles: []*authpb.Role{
			{Name: []byte("app"), KeyPermission: []*authpb.Permission{
				{PermType: authpb.Permission_READWRITE, Key: []byte("/app/"), RangeEnd: []byte("/app0")},
				{PermType: authpb.Permission_READ, Key: []byte("/shared")},
			}},
			{Name: []byte("root")},
		},
	}
	if err := b.SetAuth(want); err != nil {
		t.Fatal(err)
	}
	store, err := b.Build(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "snap")
	if err := etcdformat.WriteSnapshotFile(path, sourceOf(store.View(), nil, nil)); err != nil {
		t.Fatal(err)
	}
	st, back, err := ReadSnapshot(path, etcdformat.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Auth.Enabled || st.Auth.Revision != 17 {
		t.Fatalf("auth read as enabled %t revision %d", st.Auth.Enabled, st.Auth.Revision)
	}
	got := back.View().Auth()
	if got.Enabled != want.Enabled || got.Revision != want.Revision || len(got.Users) != len(want.Users) || len(got.Roles) != len(want.Roles) {
		t.Fatalf("auth came back as %+v", got)
	}
	for i := range want.Users {
		if !proto.Equal(got.Users[i], want.Users[i]) {
			t.Fatalf("user %d came back as %v, want %v", i, got.Users[i], want.Users[i])
		}
	}
	for i := range want.Roles {
		if !proto.Equal(got.Roles[i], want.Roles[i]) {
			t.Fatalf("role %d came back as %v, want %v", i, got.Roles[i], want.Roles[i])
		}
	}
	if err := back.CheckRange(kvsm.AuthInfo{Username: "alice", Revision: 17}, []byte("/app/x"), nil); err != nil {
		t.Fatalf("alice may not read /app/x after the round trip: %v", err)
	}
	if err := back.CheckRange(kvsm.AuthInfo{Username: "alice", Revision: 17}, []byte("/other"), nil); err == nil {
		t.Fatal("alice may read /other after the round trip")
	}
}

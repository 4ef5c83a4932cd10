package etcddata

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"

	"github.com/noded/noded/disk"
	"github.com/noded/noded/disk/etcdformat"
	"github.com/noded/noded/kvsm"
)

// etcdMember puts a fixture member's data directory into a SimFS under
// "m": its WAL files go through the FS; its database stays an OS file
// (bbolt opens its files itself), read by readDB.
func etcdMember(t *testing.T, v string) (*disk.SimFS, PrepareConfig) {
	t.Helper()
	fsys := disk.NewSimFS()
	src := disk.NewOSFS(fixture("etcd-" + v + "-member"))
	copyIntoSim(t, fsys, src, "member", "m/member")
	dbPath := fixture("etcd-" + v + "-member/member/snap/db")
	return fsys, PrepareConfig{
		FS: fsys, DataDir: "m", WALDir: "m/member/wal", SnapDir: "m/member/snap", DBPath: dbPath,
		Options: disk.Options{SegmentSizeBytes: 4096},
		readDB: func(p string) (*etcdformat.State, *kvsm.Store, error) {
			return readDB(p, etcdformat.ReadOptions{})
		},
	}
}

func TestConvertAnEtcdMember(t *testing.T) {
	for _, v := range fixtureVersions {
		t.Run(v, func(t *testing.T) {
			fsys, cfg := etcdMember(t, v)
			etcdFiles := snapshotOf(t, fsys, "m/member")
			layout, err := Prepare(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !layout.Etcd || layout.Converted == nil || layout.WALDir != "m/member/noded/wal" || layout.SnapDir != "m/member/noded/snap" {
				t.Fatalf("layout %+v", layout)
			}
			c := layout.Converted
			if c.ConsistentIndex != 35 || c.LastIndex != 41 || c.Members != 1 || c.Leases != 2 || c.Entries[etcdformat.EntryKept] != 6 {
				t.Fatalf("converted %+v", c)
			}
			db, dbStore, err := readDB(cfg.DBPath, etcdformat.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			o := openMember(t, fsys, layout.WALDir, layout.SnapDir)
			if o.memberID != db.Members[0].ID || o.clusterID != c.ClusterID || o.stateHash != dbStore.StateHash() ||
				o.index != 35 || o.term != 2 || len(o.entries) != 6 || o.entries[5].GetIndex() != 41 {
				t.Fatalf("the converted member opens as %s", o)
			}
			if o.status.Members[0].Name != "m" || len(o.status.Members[0].ClientURLs) != 1 {
				t.Fatalf("member table %v", o.status.Members)
			}
			// The entries after the database's index carry the writes it
			// never saw.
			keys := liveKeysAfter(t, fsys, layout.WALDir, layout.SnapDir)
			want := []string{"after", "late/2", "late/3", "late/4", "late/5", "leased/a", "leased/b", "leased/c", "txn/x"}
			if !slices.Equal(keys, want) {
				t.Fatalf("after the log: %v, want %v", keys, want)
			}
			// etcd's files are as they were; noded's are beside them.
			after := snapshotOf(t, fsys, "m/member")
			for name, data := range etcdFiles {
				if after[name] != data {
					t.Fatalf("etcd's %s changed", name)
				}
			}
			// Started again, the member finds its converted files and
			// converts nothing.
			again, err := Prepare(cfg)
			if err != nil || again.Converted != nil || again.WALDir != layout.WALDir {
				t.Fatalf("second start: %+v %v", again, err)
			}
		})
	}
}

func TestConvertWithWALDir(t *testing.T) {
	fsys, cfg := etcdMember(t, "3.7")
	// etcd's --wal-dir: the WAL lives elsewhere; noded's goes beside it.
	copyIntoSim(t, fsys, disk.NewOSFS(fixture("etcd-3.7-member")), "member/wal", "walvol/wal")
	cfg.WALDir, cfg.WALDirSet = "walvol/wal", true
	layout, err := Prepare(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if layout.WALDir != "walvol/wal/noded" || layout.SnapDir != "m/member/noded/snap" {
		t.Fatalf("layout %+v", layout)
	}
	openMember(t, fsys, layout.WALDir, layout.SnapDir)
}

func TestConvertRefusesAndWritesNothing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(t *testing.T, fsys *disk.SimFS, cfg *PrepareConfig)
		want   string
	}{
		{"a running member", func(t *testing.T, fsys *disk.SimFS, cfg *PrepareConfig) {
			cfg.readDB = func(string) (*etcdformat.State, *kvsm.Store, error) { return nil, nil, etcdformat.ErrMemberRunning }
		}, "still running"},
		{"a database without a WAL", func(t *testing.T, fsys *disk.SimFS, cfg *PrepareConfig) {
			names, _ := fsys.List("m/member/wal")
			for _, n := range names {
				fsys.Remove("m/member/wal/" + n)
			}
		}, "holds no WAL"},
		{"a WAL still being created", func(t *testing.T, fsys *disk.SimFS, cfg *PrepareConfig) {
			fsys.MkdirAll("m/member/wal.tmp")
		}, "wal.tmp"},
		{"a corrupt WAL", func(t *testing.T, fsys *disk.SimFS, cfg *PrepareConfig) {
			names, _ := fsys.List("m/member/wal")
			fsys.FlipBit("m/member/wal/"+names[0], 8*1000+1)
		}, "corrupt"},
		{"a WAL that does not reach back to the database", func(t *testing.T, fsys *disk.SimFS, cfg *PrepareConfig) {
			names, _ := fsys.List("m/member/wal")
			for _, n := range names {
				data := readAll(t, fsys, "m/member/wal/"+n)
				fsys.Remove("m/member/wal/" + n)
				w, _ := fsys.Create("m/member/wal/0000000000000000-0000000000000040.wal")
				w.Write(data)
				w.Close()
			}
		}, "entries in between are gone"},
		{"auth on without a root user", func(t *testing.T, fsys *disk.SimFS, cfg *PrepareConfig) {
			read := cfg.readDB
			cfg.readDB = func(p string) (*etcdformat.State, *kvsm.Store, error) {
				st, _, err := read(p)
				if err != nil {
					return nil, nil, err
				}
				b := kvsm.NewBuilder(storeConfig)
				if err := b.SetAuth(kvsm.AuthExport{Enabled: true, Users: []*authpb.User{{Name: []byte("u")}}}); err != nil {
					return nil, nil, err
				}
				s, err := b.Build(0, 0)
				return st, s, err
			}
		}, "root user"},
		{"a removed member", func(t *testing.T, fsys *disk.SimFS, cfg *PrepareConfig) {
			read := cfg.readDB
			cfg.readDB = func(p string) (*etcdformat.State, *kvsm.Store, error) {
				st, s, err := read(p)
				if err == nil {
					st.Removed = append(st.Removed, st.Members[0].ID)
				}
				return st, s, err
			}
		}, "was removed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys, cfg := etcdMember(t, "3.7")
			tc.mutate(t, fsys, &cfg)
			before := snapshotOf(t, fsys, "m")
			_, err := Prepare(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
			if after := snapshotOf(t, fsys, "m"); !maps.Equal(before, after) {
				t.Fatal("the refused conversion wrote files")
			}
		})
	}
}

// A real running member: its database's lock is held. The error names it.
func TestConvertRefusesALockedDatabase(t *testing.T) {
	fsys, cfg := etcdMember(t, "3.7")
	cfg.readDB = nil
	dir := t.TempDir()
	data, _ := os.ReadFile(cfg.DBPath)
	cfg.DBPath = filepath.Join(dir, "db")
	os.WriteFile(cfg.DBPath, data, 0o600)
	unlock := holdLock(t, cfg.DBPath)
	defer unlock()
	cfg.LockTimeout = 100 * time.Millisecond
	if _, err := Prepare(cfg); !errors.Is(err, etcdformat.ErrMemberRunning) {
		t.Fatalf("got %v, want ErrMemberRunning", err)
	}
	if disk.Exists(fsys, "m/member/noded/wal") {
		t.Fatal("a WAL was written")
	}
}

func TestPrepareRefusesAnInterruptedRestore(t *testing.T) {
	fsys := disk.NewSimFS()
	fsys.MkdirAll("d/member/snap")
	f, _ := fsys.Create("d/member/snap/0000000000000003-0000000000000001.snap")
	f.Close()
	_, err := Prepare(PrepareConfig{FS: fsys, DataDir: "d", WALDir: "d/member/wal", SnapDir: "d/member/snap"})
	if err == nil || !strings.Contains(err.Error(), "no WAL") {
		t.Fatalf("got %v", err)
	}
	// An empty directory is a new member's.
	if _, err := Prepare(PrepareConfig{FS: disk.NewSimFS(), DataDir: "e", WALDir: "e/member/wal", SnapDir: "e/member/snap"}); err != nil {
		t.Fatal(err)
	}
}

// TestConvertCrashSweep crashes the conversion after every FS operation,
// in every crash mode, and starts the member again: it must convert again
// or find the whole conversion, and open with exactly what the clean
// conversion gives; etcd's files never change.
func TestConvertCrashSweep(t *testing.T) {
	total, outcomes, err := convertSweep(t)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d FS operations; after a crash: %v", total, outcomes)
	if outcomes["converted again"] == 0 || outcomes["whole"] == 0 {
		t.Fatalf("the sweep missed an outcome: %v", outcomes)
	}
}

func TestConvertCrashSweepCatchesAWALWrittenFirst(t *testing.T) {
	plantWALFirst(t)
	if _, _, err := convertSweep(t); err == nil {
		t.Fatal("the sweep passed a conversion whose WAL appears before its contents")
	} else {
		t.Logf("caught: %v", err)
	}
}

func convertSweep(t *testing.T) (int64, map[string]int, error) {
	t.Helper()
	clean, base := etcdMember(t, "3.4")
	etcdFiles := snapshotOf(t, clean, "m/member")
	start := clean.OpsCount()
	layout, err := Prepare(base)
	if err != nil {
		return 0, nil, err
	}
	total := clean.OpsCount() - start
	want := openMember(t, clean, layout.WALDir, layout.SnapDir).String()
	configFor := func(fsys *disk.SimFS) PrepareConfig {
		cfg := base
		cfg.FS = fsys
		return cfg
	}
	outcomes, err := crashSweep(total,
		func() *disk.SimFS { fsys, _ := etcdMember(t, "3.4"); return fsys },
		func(fsys *disk.SimFS) error { _, err := Prepare(configFor(fsys)); return err },
		func(fsys *disk.SimFS) (string, error) {
			again, err := Prepare(configFor(fsys))
			if err != nil {
				return "", fmt.Errorf("starting again after the crash: %v", err)
			}
			outcome := "whole"
			if again.Converted != nil {
				outcome = "converted again"
			}
			st, rec, err := disk.Open(fsys, again.WALDir, again.SnapDir, base.Options)
			if err != nil {
				return "", fmt.Errorf("open: %v", err)
			}
			st.Close()
			if rec.Snapshot == nil {
				return "", errors.New("the converted member opens with no snapshot: it would start empty")
			}
			if got := openMember(t, fsys, again.WALDir, again.SnapDir).String(); got != want {
				return "", fmt.Errorf("the member opens as\n%s\nwant\n%s", got, want)
			}
			after := snapshotOf(t, fsys, "m/member")
			for f, data := range etcdFiles {
				if after[f] != data {
					return "", fmt.Errorf("etcd's %s changed", f)
				}
			}
			return outcome, nil
		})
	return total, outcomes, err
}

// An operator went back to etcd on its untouched files, etcd ran (and
// appended to its WAL), and noded is started again: its converted files
// are behind etcd's, and it says so instead of resuming from them.
func TestConvertedDirectoryRefusedAfterEtcdRanAgain(t *testing.T) {
	fsys, cfg := etcdMember(t, "3.7")
	if _, err := Prepare(cfg); err != nil {
		t.Fatal(err)
	}
	names, err := fsys.List("m/member/wal")
	if err != nil || len(names) == 0 {
		t.Fatal(names, err)
	}
	// etcd's next record, as far as the check can tell: the WAL reads
	// differently from the end of what was converted.
	last := "m/member/wal/" + names[len(names)-1]
	data := readAll(t, fsys, last)
	f, err := fsys.Create(last)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(data[:len(data)-24])
	f.Sync()
	f.Close()
	_, err = Prepare(cfg)
	if err == nil || !strings.Contains(err.Error(), "etcd ran on data directory") {
		t.Fatalf("got %v, want the refusal", err)
	}
}

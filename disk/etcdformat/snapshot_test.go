package etcdformat

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
)

// The fixtures are real etcd's (testdata/gen.sh): one member of etcd 3.4
// and one of etcd 3.7 wrote the same history, and etcdctl saved it.
var fixtureVersions = []string{"3.4", "3.7"}

func getAt(t *testing.T, s *kvsm.Store, key string, rev int64) (*mvccpb.KeyValue, error) {
	t.Helper()
	resp, err := s.Range(&pb.RangeRequest{Key: []byte(key), Revision: rev})
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0], nil
}

func TestReadEtcdSnapshots(t *testing.T) {
	for _, v := range fixtureVersions {
		t.Run(v, func(t *testing.T) {
			st, s, err := readStore(fixture("etcd-"+v+".snapshot"), ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// etcdutl's own report of the same file.
			raw, err := os.ReadFile(fixture("etcd-" + v + ".status.json"))
			if err != nil {
				t.Fatal(err)
			}
			var want Status
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatal(err)
			}
			if st.Status != want {
				t.Fatalf("status %+v, etcdutl says %+v", st.Status, want)
			}
			if st.Format != "etcd" || s.Rev() != 29 || s.CompactRev() != 17 || st.ClusterVersion != v+".0" {
				t.Fatalf("format %s revision %d compacted at %d cluster version %s", st.Format, s.Rev(), s.CompactRev(), st.ClusterVersion)
			}
			live := map[string]string{}
			resp, _ := s.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
			for _, kv := range resp.Kvs {
				live[string(kv.Key)] = string(kv.Value)
			}
			wantLive := map[string]string{"after": "compaction", "leased/a": "1", "leased/b": "2", "leased/c": "3", "txn/x": "1"}
			if len(live) != len(wantLive) {
				t.Fatalf("live keys %v, want %v", live, wantLive)
			}
			for k, val := range wantLive {
				if live[k] != val {
					t.Fatalf("live keys %v, want %v", live, wantLive)
				}
			}
			// History kept by the compaction at 17: key/1 as of then.
			kv, err := getAt(t, s, "key/1", 17)
			if err != nil || kv == nil || string(kv.Value) != "value-15" || kv.Version != 3 || kv.CreateRevision != 2 {
				t.Fatalf("key/1 at 17: %v %v", kv, err)
			}
			if _, err := getAt(t, s, "key/1", 16); err == nil {
				t.Fatal("a read below the compaction succeeded")
			}
			leases := s.Leases()
			if len(leases) != 2 || leases[0].GrantedTTLSeconds != 600 || leases[1].GrantedTTLSeconds != 300 {
				t.Fatalf("leases %v", leases)
			}
			if got := []string{string(leases[0].Keys[0]), string(leases[0].Keys[1])}; len(leases[0].Keys) != 2 || got[0] != "leased/a" || got[1] != "leased/b" {
				t.Fatalf("lease %x holds %q", leases[0].ID, leases[0].Keys)
			}
			if len(st.Members) != 1 || st.Members[0].Name != "m" || len(st.Removed) != 0 || !st.Auth.Empty() {
				t.Fatalf("members %+v removed %v auth %+v", st.Members, st.Removed, st.Auth)
			}
			if err := s.CheckInvariants(); err != nil {
				t.Fatal(err)
			}
			// The member's database, read as a running member's would be,
			// holds the state the snapshot was taken of.
			db, dbStore, err := readDBStore(fixture("etcd-"+v+"-member/member/snap/db"), ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if dbStore.StateHash() != s.StateHash() || db.ConsistentIndex != 35 {
				t.Fatalf("database at index %d differs from the snapshot", db.ConsistentIndex)
			}
			if v == "3.7" && (db.Term != 2 || db.ConfState == nil || !slices.Equal(db.ConfState.Voters, []uint64{st.Members[0].ID})) {
				t.Fatalf("3.7 database term %d conf state %v", db.Term, db.ConfState)
			}
		})
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for seed := uint64(1); seed <= 10; seed++ {
		s := sampleStore(seed, 400)
		s.Apply(&pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: 0x1111, Alarm: pb.AlarmType_NOSPACE}})
		src := sampleSource(s)
		path := filepath.Join(dir, "snap-"+string(rune('a'+seed)))
		if err := WriteSnapshotFile(path, src); err != nil {
			t.Fatal(err)
		}
		st, back, err := readStore(path, ReadOptions{})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if back.StateHash() != s.StateHash() {
			t.Fatalf("seed %d: the state read back differs", seed)
		}
		if st.ConsistentIndex != 12345 || st.Term != 7 || st.StorageVersion != "3.5.0" || st.ClusterVersion != "3.5.0" ||
			!slices.Equal(st.ConfState.Voters, []uint64{0x1111}) || !slices.Equal(st.ConfState.Learners, []uint64{0x2222}) ||
			!slices.Equal(st.Removed, []uint64{0x3333}) || len(st.Members) != 2 || !st.Members[1].IsLearner ||
			st.Members[0].Name != "a" || st.Members[0].ClientURLs[0] != "http://10.0.0.1:2379" || st.CompactRev != s.CompactRev() {
			t.Fatalf("seed %d: meta read back %+v", seed, st.Meta)
		}
	}
}

// etcdutl and etcd read noded's files: status agrees with ours, and
// restore accepts them (the end-to-end tests start etcd on the result).
func TestEtcdutlReadsWrittenSnapshots(t *testing.T) {
	dir := os.Getenv("NODED_ETCD37_DIR")
	etcdutl := filepath.Join(dir, "etcdutl")
	if _, err := os.Stat(etcdutl); dir == "" || err != nil {
		t.Skip("etcd 3.7's etcdutl not found: set NODED_ETCD37_DIR to a directory holding it (test.sh builds one with etcd-anchors.sh)")
	}
	s := sampleStore(3, 300)
	path := filepath.Join(t.TempDir(), "snap")
	if err := WriteSnapshotFile(path, sampleSource(s)); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(etcdutl, "snapshot", "status", path, "-w", "json").Output()
	if err != nil {
		t.Fatalf("etcdutl snapshot status: %v", err)
	}
	var theirs Status
	if err := json.Unmarshal(out, &theirs); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	st, _, err := readStore(path, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if theirs != st.Status {
		t.Fatalf("etcdutl says %+v, we say %+v", theirs, st.Status)
	}
	restored := filepath.Join(t.TempDir(), "r")
	if out, err := exec.Command(etcdutl, "snapshot", "restore", path, "--data-dir", restored).CombinedOutput(); err != nil {
		t.Fatalf("etcdutl snapshot restore: %v\n%s", err, out)
	}
}

func TestReadSnapshotRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile(fixture("etcd-3.7.snapshot"))
	if err != nil {
		t.Fatal(err)
	}
	db := good[:len(good)-sha256.Size]
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := slices.Clone(good)
	flipped[len(db)/2] ^= 0x40
	notBolt := bytes.Repeat([]byte("not a database "), 4096)[:8192]
	for _, tc := range []struct {
		name string
		path string
		skip bool
		want string
	}{
		{"truncated", write("truncated", good[:len(good)/2]), false, "snapshot missing hash"},
		{"truncated, hash check skipped", write("truncated2", db[:len(db)/2]), true, "truncated"},
		{"truncated to whole pages plus 32 bytes", write("truncated3", good[:3*4096+32]), false, "hash mismatch"},
		{"hash mismatch", write("flipped", flipped), false, "hash mismatch"},
		{"not bbolt", write("notbolt", notBolt), true, "not an etcd database"},
		{"not bbolt, with a trailer", writeTrailed(t, dir, "notbolt2", notBolt), false, "not an etcd database"},
		{"empty", write("empty", nil), true, "not an etcd database"},
		{"missing", filepath.Join(dir, "missing"), true, "no such file"},
		{"a directory", dir, true, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readStore(tc.path, ReadOptions{SkipHashCheck: tc.skip})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
	// The trailer is what --skip-hash-check skips: the same bytes read.
	if _, _, err := readStore(write("db-only", db), ReadOptions{SkipHashCheck: true}); err != nil {
		t.Fatalf("a database without its trailer, hash check skipped: %v", err)
	}
}

func writeTrailed(t *testing.T, dir, name string, data []byte) string {
	p := filepath.Join(dir, name)
	writeWithTrailer(t, p, data)
	return p
}

// boltWith writes a snapshot file whose database holds src and then
// whatever edit does to it.
func boltWith(t *testing.T, edit func(tx *bolt.Tx) error) string {
	t.Helper()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "db")
	if err := WriteDB(dbPath, sampleSource(sampleStore(1, 50))); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(dbPath, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(edit); err != nil {
		t.Fatal(err)
	}
	db.Close()
	data, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	return writeTrailed(t, dir, "snap", data)
}

func TestReadSnapshotRefusesWhatItCannotKeep(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(tx *bolt.Tx) error
		want string
	}{
		{"a bucket etcd 3.7 does not have", func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte("shiny"))
			return err
		}, "unknown bucket"},
		{"a newer storage version", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(metaStorageVersion, []byte("3.8.0"))
		}, "does not know"},
		{"a downgrade in progress", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketCluster).Put(clusterDowngrade, []byte(`{"target-version":"3.4.0","enabled":true}`))
		}, "downgrade"},
		{"a key bucket entry that is no revision", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketKey).Put([]byte("nonsense"), []byte{})
		}, "not a revision"},
		{"a value that is no KeyValue", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketKey).Put(appendRevKey(nil, 10000, 0, false), []byte{0xff, 0xff})
		}, "revision 10000.0"},
		{"a lease under another ID", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketLease).Put(binary.BigEndian.AppendUint64(nil, 5), marshalLease(6, 10, 0))
		}, "holds lease"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readStore(boltWith(t, tc.edit), ReadOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
	// Users and roles read, so that the restore can refuse them by name.
	path := boltWith(t, func(tx *bolt.Tx) error {
		u, _ := proto.Marshal(&authpb.User{Name: []byte("root"), Roles: []string{"root"}})
		return tx.Bucket(bucketAuthUsers).Put([]byte("root"), u)
	})
	st, _, err := readStore(path, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Auth.Empty() || len(st.Auth.Users) != 1 {
		t.Fatalf("auth read as %+v", st.Auth)
	}
}

// A database whose lock a process holds is a running member's: refused,
// and refused fast.
func TestReadDBRefusesARunningMember(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	data, err := os.ReadFile(fixture("etcd-3.7-member/member/snap/db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	running, err := bolt.Open(path, 0o600, nil) // holds the exclusive lock, as etcd does
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()
	_, _, err = readDBStore(path, ReadOptions{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrMemberRunning) {
		t.Fatalf("got %v, want ErrMemberRunning", err)
	}
	running.Close()
	if _, _, err := readDBStore(path, ReadOptions{}); err != nil {
		t.Fatalf("after the member stopped: %v", err)
	}
}

// noded's snapshot stream sent its own format before it sent etcd's;
// such files still restore.
func TestReadNodedV1Snapshot(t *testing.T) {
	s := sampleStore(9, 200)
	kv := s.Snapshot()
	data := append([]byte(nodedV1Magic), binary.BigEndian.AppendUint64(nil, uint64(len(kv)))...)
	data = append(data, kv...)
	data = append(data, make([]byte, (512-len(data)%512)%512)...)
	path := writeTrailed(t, t.TempDir(), "v1", data)
	st, back, err := readStore(path, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Format != "noded-v1" || back.StateHash() != s.StateHash() {
		t.Fatalf("format %s, state equal: %t", st.Format, back.StateHash() == s.StateHash())
	}
}

// bbolt is etcd's library and noded's only way to its files: nothing but
// this package imports it (DESIGN.md).
func TestOnlyThisPackageImportsBbolt(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}`, "github.com/noded/noded/...").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] == "github.com/noded/noded/disk/etcdformat" {
			continue
		}
		for _, imp := range fields[1:] {
			if strings.HasPrefix(imp, "go.etcd.io/bbolt") {
				t.Errorf("%s imports %s: etcd's files are disk/etcdformat's", fields[0], imp)
			}
		}
	}
}

// A branch page that points back at itself makes bbolt's cursors descend
// forever; the reader finds the loop first. So for an inline bucket whose
// page is not a leaf (bbolt reads it as a branch whose child is itself).
func TestReadSnapshotRefusesLoopingPages(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "db")
	if err := WriteDB(dbPath, sampleSource(sampleStore(5, 3000))); err != nil {
		t.Fatal(err)
	}
	clean, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	const pageSize = 4096
	branchLoop := slices.Clone(clean)
	planted := false
	for id := 2; (id+1)*pageSize <= len(branchLoop) && !planted; id++ {
		page := branchLoop[id*pageSize:]
		if binary.LittleEndian.Uint64(page) == uint64(id) && binary.LittleEndian.Uint16(page[8:]) == branchPageFlag {
			binary.LittleEndian.PutUint64(page[pageHeaderBytes+8:], uint64(id)) // first child: itself
			planted = true
		}
	}
	if !planted {
		t.Fatal("no branch page to plant a loop in")
	}
	inlineNotLeaf := slices.Clone(clean)
	// Every copy of the bucket's entry (freed pages keep old ones): the
	// key, then the bucket header (root 0, sequence), then its page.
	planted = false
	for off := 0; ; {
		i := bytes.Index(inlineNotLeaf[off:], []byte("members_removed"))
		if i < 0 {
			break
		}
		inline := inlineNotLeaf[off+i+len("members_removed")+bucketHeaderSize:]
		if binary.LittleEndian.Uint16(inline[8:]) == leafPageFlag {
			binary.LittleEndian.PutUint16(inline[8:], branchPageFlag)
			planted = true
		}
		off += i + 1
	}
	if !planted {
		t.Fatal("members_removed is not an inline leaf")
	}
	for name, data := range map[string][]byte{"a branch page that is its own child": branchLoop, "an inline bucket that is no leaf": inlineNotLeaf} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, _, err := readStore(path, ReadOptions{SkipHashCheck: true})
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "damaged") {
					t.Fatalf("got %v, want the damage named", err)
				}
				t.Log(err)
			case <-time.After(time.Minute):
				t.Fatal("the reader loops")
			}
		})
	}
}

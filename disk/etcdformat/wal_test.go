package etcdformat

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/disk"
)

// loadFixtureWAL copies a fixture member's WAL files into a SimFS.
func loadFixtureWAL(t *testing.T, v string) *disk.SimFS {
	t.Helper()
	src := disk.NewOSFS(fixture("etcd-" + v + "-member"))
	names, err := src.List("member/wal")
	if err != nil {
		t.Fatal(err)
	}
	fsys := disk.NewSimFS()
	if err := fsys.MkdirAll("member/wal"); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		data, err := readWALFile(src, "member/wal/"+n)
		if err != nil {
			t.Fatal(err)
		}
		writeSimFile(t, fsys, "member/wal/"+n, data)
	}
	return fsys
}

func writeSimFile(t *testing.T, fsys disk.FS, name string, data []byte) {
	t.Helper()
	f, err := fsys.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestReadEtcdWALs(t *testing.T) {
	for _, v := range fixtureVersions {
		t.Run(v, func(t *testing.T) {
			fsys := loadFixtureWAL(t, v)
			db, s, err := readDBStore(fixture("etcd-"+v+"-member/member/snap/db"), ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// From the database's applied index: the writes the database
			// never saw (the member was killed before its backend commit).
			w, err := ReadWAL(fsys, "member/wal", db.ConsistentIndex)
			if err != nil {
				t.Fatal(err)
			}
			if w.NodeID != db.Members[0].ID || w.ClusterID == 0 || w.TermAtStart != 2 || w.TornTail {
				t.Fatalf("member %x cluster %x term at start %d torn %t", w.NodeID, w.ClusterID, w.TermAtStart, w.TornTail)
			}
			if len(w.Entries) != 6 || w.Entries[0].GetIndex() != db.ConsistentIndex+1 || w.HardState == nil {
				t.Fatalf("%d entries from %d, hard state %v", len(w.Entries), w.Entries[0].GetIndex(), w.HardState)
			}
			// Applied to the database's state, they give the state the
			// member acknowledged: late/1..5 put, late/1 deleted.
			for _, e := range w.Entries {
				var r pb.InternalRaftRequest
				if err := proto.Unmarshal(e.GetData(), &r); err != nil {
					t.Fatal(err)
				}
				if res := s.Apply(&r); res.Err != nil {
					t.Fatalf("entry %d: %v", e.GetIndex(), res.Err)
				}
			}
			resp, _ := s.Range(&pb.RangeRequest{Key: []byte("late/"), RangeEnd: []byte("late0"), KeysOnly: true})
			var keys []string
			for _, kv := range resp.Kvs {
				keys = append(keys, string(kv.Key))
			}
			if !slices.Equal(keys, []string{"late/2", "late/3", "late/4", "late/5"}) {
				t.Fatalf("after the WAL's entries: %v", keys)
			}

			// From the start: every entry etcd wrote, each translated.
			all, err := ReadWAL(fsys, "member/wal", 0)
			if err != nil {
				t.Fatal(err)
			}
			kinds := map[EntryKind]int{}
			for i, e := range all.Entries {
				if e.GetIndex() != uint64(i+1) {
					t.Fatalf("entry %d has index %d", i, e.GetIndex())
				}
				out, kind, err := TranslateEntry(e, func(m Member) []byte { return []byte(fmt.Sprintf("member %x %s %v", m.ID, m.Name, m.PeerURLs)) })
				if err != nil {
					t.Fatal(err)
				}
				if out.GetIndex() != e.GetIndex() || out.GetTerm() != e.GetTerm() {
					t.Fatalf("entry %d/%d became %d/%d", e.GetIndex(), e.GetTerm(), out.GetIndex(), out.GetTerm())
				}
				kinds[kind]++
				if kind == EntryConfChange {
					var cc raftpb.ConfChange
					proto.Unmarshal(out.GetData(), &cc)
					if want := fmt.Sprintf("member %x m [%s]", w.NodeID, db.Members[0].PeerURLs[0]); string(cc.GetContext()) != want {
						t.Fatalf("conf change context %q, want %q", cc.GetContext(), want)
					}
				}
			}
			// Both bootstrap with one conf change; 3.4 publishes its name
			// and sets the cluster version through v2 requests.
			if kinds[EntryConfChange] != 1 {
				t.Fatalf("entry kinds %v", kinds)
			}
			if v == "3.4" && (kinds[EntryMemberAttributes] != 1 || kinds[EntryV2Dropped] < 1) {
				t.Fatalf("3.4 entry kinds %v", kinds)
			}
			if v == "3.7" && (kinds[EntryMemberAttributes] != 0 || kinds[EntryV2Dropped] != 0) {
				t.Fatalf("3.7 entry kinds %v", kinds)
			}
		})
	}
}

// syntheticWAL is two files: entries 1..6 in term 1, then a new leader's
// entries from 5 on in term 2 (overwriting 5 and 6), with hard states.
func syntheticWAL(t *testing.T) (*disk.SimFS, *walWriter) {
	w := &walWriter{}
	w.newFile()
	w.metadata(7, 9)
	w.snapshot(0, 0)
	for i := uint64(1); i <= 6; i++ {
		w.entry(i, 1, putData(i, fmt.Sprint("k", i), "t1"))
	}
	w.state(1, 7, 4)
	w.newFile()
	w.metadata(7, 9)
	w.state(1, 7, 4)
	w.entry(5, 2, putData(50, "k5", "t2"))
	w.entry(6, 2, putData(60, "k6", "t2"))
	w.entry(7, 2, putData(70, "k7", "t2"))
	w.state(2, 0, 6)
	fsys := disk.NewSimFS()
	fsys.MkdirAll("wal")
	writeSimFile(t, fsys, "wal/0000000000000000-0000000000000000.wal", w.files[0])
	writeSimFile(t, fsys, "wal/0000000000000001-0000000000000005.wal", w.files[1])
	return fsys, w
}

func describeWAL(w *WAL) string {
	s := fmt.Sprintf("term@start=%d hs=%d/%d/%d", w.TermAtStart, w.HardState.GetTerm(), w.HardState.GetVote(), w.HardState.GetCommit())
	for _, e := range w.Entries {
		s += fmt.Sprintf(" %d/%d", e.GetIndex(), e.GetTerm())
	}
	return s
}

func TestReadWALOverwritesAndStartingPoints(t *testing.T) {
	fsys, _ := syntheticWAL(t)
	for _, tc := range []struct {
		from uint64
		want string
	}{
		{0, "term@start=0 hs=2/0/6 1/1 2/1 3/1 4/1 5/2 6/2 7/2"},
		{3, "term@start=1 hs=2/0/6 4/1 5/2 6/2 7/2"},
		// Reading starts in the second file (its name says entries from 5).
		{6, "term@start=2 hs=2/0/6 7/2"},
		{7, "term@start=2 hs=2/0/6"},
	} {
		w, err := ReadWAL(fsys, "wal", tc.from)
		if err != nil {
			t.Fatalf("from %d: %v", tc.from, err)
		}
		if got := describeWAL(w); got != tc.want {
			t.Fatalf("from %d: %s\nwant    %s", tc.from, got, tc.want)
		}
	}
}

func TestReadWALRefusesDamage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(fsys *disk.SimFS, w *walWriter)
		from    uint64
		want    string
		corrupt bool
	}{
		{"a flipped bit in the first file", func(fsys *disk.SimFS, w *walWriter) {
			fsys.FlipBit("wal/0000000000000000-0000000000000000.wal", 8*200+3)
		}, 0, "", true},
		{"the first file missing", func(fsys *disk.SimFS, w *walWriter) {
			fsys.Remove("wal/0000000000000000-0000000000000000.wal")
		}, 2, "starts at index 5", false},
		{"a file missing in the middle", func(fsys *disk.SimFS, w *walWriter) {
			writeSimFile(t, fsys, "wal/0000000000000003-0000000000000009.wal", w.files[1])
		}, 0, "files are missing", false},
		{"a file from another member", func(fsys *disk.SimFS, w *walWriter) {
			other := &walWriter{crc: w.crc}
			other.newFile()
			other.metadata(8, 9)
			writeSimFile(t, fsys, "wal/0000000000000002-0000000000000008.wal", other.files[0])
		}, 0, "metadata differs", true},
		{"a file whose chain does not continue", func(fsys *disk.SimFS, w *walWriter) {
			other := &walWriter{crc: 12345}
			other.newFile()
			other.metadata(7, 9)
			writeSimFile(t, fsys, "wal/0000000000000002-0000000000000008.wal", other.files[0])
		}, 0, "CRC record", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys, w := syntheticWAL(t)
			tc.mutate(fsys, w)
			_, err := ReadWAL(fsys, "wal", tc.from)
			var ce *CorruptError
			if err == nil || (tc.corrupt != errors.As(err, &ce)) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q (corrupt: %t)", err, tc.want, tc.corrupt)
			}
		})
	}
}

// A crash while etcd appended leaves the last file's last record cut
// short: the sectors past the cut hold zeros (etcd writes whole 512-byte
// sectors, so a torn write tears at sector boundaries). Like etcd, the
// reader ends there. The same cut in an earlier file is damage, and so is
// a record whose sectors are all there but whose checksum fails.
func TestReadWALTornTail(t *testing.T) {
	_, w := syntheticWAL(t)
	start := len(w.files[1])
	w.entry(8, 2, putData(80, "k8", strings.Repeat("v", 1500)))
	last := w.files[1]
	for cut := (start/512 + 1) * 512; cut < len(last); cut += 512 {
		fsys := disk.NewSimFS()
		fsys.MkdirAll("wal")
		writeSimFile(t, fsys, "wal/0000000000000000-0000000000000000.wal", w.files[0])
		torn := append(append([]byte(nil), last[:cut]...), make([]byte, 2048)...)
		writeSimFile(t, fsys, "wal/0000000000000001-0000000000000005.wal", torn)
		got, err := ReadWAL(fsys, "wal", 0)
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if !got.TornTail || got.Entries[len(got.Entries)-1].GetIndex() != 7 {
			t.Fatalf("cut at %d: torn %t, %s", cut, got.TornTail, describeWAL(got))
		}
	}
	// Cut at the end of the file: the record runs past it.
	fsys := disk.NewSimFS()
	fsys.MkdirAll("wal")
	writeSimFile(t, fsys, "wal/0000000000000000-0000000000000000.wal", w.files[0])
	writeSimFile(t, fsys, "wal/0000000000000001-0000000000000005.wal", last[:len(last)-100])
	if got, err := ReadWAL(fsys, "wal", 0); err != nil || !got.TornTail {
		t.Fatalf("a record past the end of the last file: %v", err)
	}
	var ce *CorruptError
	damaged := append([]byte(nil), last...)
	damaged[len(damaged)-20] ^= 1
	writeSimFile(t, fsys, "wal/0000000000000001-0000000000000005.wal", damaged)
	if _, err := ReadWAL(fsys, "wal", 0); !errors.As(err, &ce) {
		t.Fatalf("a damaged last record: %v, want a CorruptError", err)
	}
	fsys = disk.NewSimFS()
	fsys.MkdirAll("wal")
	writeSimFile(t, fsys, "wal/0000000000000000-0000000000000000.wal", w.files[0][:len(w.files[0])-5])
	writeSimFile(t, fsys, "wal/0000000000000001-0000000000000005.wal", last)
	if _, err := ReadWAL(fsys, "wal", 0); !errors.As(err, &ce) {
		t.Fatalf("a cut inside an earlier file: %v, want a CorruptError", err)
	}
}

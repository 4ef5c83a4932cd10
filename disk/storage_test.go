package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// TestStorageRoundTrip: what was appended and synced comes back from Open
// on both file systems, including raft-style overwrites and hard states.
func TestStorageRoundTrip(t *testing.T) {
	for _, fsys := range []FS{NewSimFS(), NewOSFS(t.TempDir())} {
		t.Run(strings.SplitN(describeFS(fsys), "(", 2)[0], func(t *testing.T) {
			s := mustCreate(t, fsys, Options{SegmentSizeBytes: 200})
			must(t, s.Append(hardState(1, 1, 0), ents(1, 10, 1)))
			must(t, s.Append(hardState(2, 2, 5), ents(8, 12, 2))) // overwrites 8..10
			must(t, s.Sync())
			must(t, s.Close())
			if !Exists(fsys, "wal") {
				t.Fatal("Exists is false after Create")
			}
			s2, rec := mustOpen(t, fsys, Options{SegmentSizeBytes: 200})
			want := append(ents(1, 7, 1), ents(8, 12, 2)...)
			if got, w := describeEntries(rec.Entries), describeEntries(want); got != w {
				t.Fatalf("entries:\n got %s\nwant %s", got, w)
			}
			if !proto.Equal(rec.HardState, hardState(2, 2, 5)) {
				t.Fatalf("hard state %v", rec.HardState)
			}
			if string(rec.Metadata) != "member-1" || rec.Snapshot != nil {
				t.Fatalf("metadata %q snapshot %v", rec.Metadata, rec.Snapshot)
			}
			if len(s2.segments) < 3 {
				t.Fatalf("expected rollovers at 512 bytes, got %s", s2)
			}
			// Appending after reopen continues the chain.
			must(t, s2.Append(nil, ents(13, 14, 2)))
			must(t, s2.Sync())
			must(t, s2.Close())
			_, rec = mustOpen(t, fsys, Options{SegmentSizeBytes: 200})
			if n := len(rec.Entries); n != 14 || rec.Entries[n-1].GetIndex() != 14 {
				t.Fatalf("after second open: %s", describeEntries(rec.Entries))
			}
		})
	}
}

func describeFS(fsys FS) string {
	if s, ok := fsys.(interface{ String() string }); ok {
		return s.String()
	}
	return "FS"
}

func TestCreateRefusesExisting(t *testing.T) {
	fsys := NewSimFS()
	s := mustCreate(t, fsys, Options{})
	must(t, s.Close())
	if _, err := Create(fsys, "wal", "snap", nil, Options{}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create: %v, want ErrExist", err)
	}
	if _, _, err := Open(NewSimFS(), "wal", "snap", Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open of nothing: %v, want ErrNotExist", err)
	}
}

// TestSnapshotReleaseAndFallback: segments covered by the previous snapshot
// are released; a damaged newest snapshot falls back to the previous one,
// which the WAL still continues from; with both damaged Open refuses.
func TestSnapshotReleaseAndFallback(t *testing.T) {
	fsys := NewSimFS()
	opts := Options{SegmentSizeBytes: 300, SnapshotsKept: 2}
	s := mustCreate(t, fsys, opts)
	must(t, s.Append(hardState(1, 1, 20), ents(1, 20, 1)))
	must(t, s.Sync())
	must(t, s.SaveSnapshot(snapshot(10, 1, "state@10")))
	segsAfterFirst := len(s.segments)
	must(t, s.Append(hardState(1, 1, 40), ents(21, 40, 1)))
	must(t, s.Sync())
	must(t, s.SaveSnapshot(snapshot(30, 1, "state@30")))
	if len(s.segments) >= segsAfterFirst+8 || s.segments[0].seq == 0 {
		t.Fatalf("nothing released: %s", s)
	}
	if s.segments[0].firstIndex > 11 {
		t.Fatalf("released past the previous snapshot at 10: %s", s)
	}
	must(t, s.SaveSnapshot(snapshot(35, 1, "state@35")))
	must(t, s.Close())
	names, _ := fsys.List("snap")
	if len(names) != 2 {
		t.Fatalf("snapshot files %v, want the 2 newest", names)
	}

	_, rec := mustOpen(t, fsys, opts)
	if rec.Snapshot.GetMetadata().GetIndex() != 35 || rec.Entries[0].GetIndex() != 36 || len(rec.Entries) != 5 {
		t.Fatalf("snapshot %d entries %s", rec.Snapshot.GetMetadata().GetIndex(), describeEntries(rec.Entries))
	}
	// Damage the newest snapshot: fall back to 30.
	must(t, fsys.FlipBit("snap/"+snapName(35, 1), 8*60))
	_, rec = mustOpen(t, fsys, opts)
	if got := rec.Snapshot.GetMetadata().GetIndex(); got != 30 || string(rec.Snapshot.GetData()) != "state@30" {
		t.Fatalf("fell back to %d", got)
	}
	if rec.Entries[0].GetIndex() != 31 || rec.Entries[len(rec.Entries)-1].GetIndex() != 40 {
		t.Fatalf("entries after fallback: %s", describeEntries(rec.Entries))
	}
	// Damage that one too: the WAL no longer starts at 1, so refuse.
	must(t, fsys.FlipBit("snap/"+snapName(30, 1), 8*60))
	_, _, err := Open(fsys, "wal", "snap", opts)
	if err == nil || !strings.Contains(err.Error(), "no snapshot lets it continue") {
		t.Fatalf("Open with both snapshots damaged: %v", err)
	}
}

// TestReceivedSnapshotResetsLog: a snapshot past the last index (or whose
// term disagrees with the log) restarts the log after it.
func TestReceivedSnapshotResetsLog(t *testing.T) {
	fsys := NewSimFS()
	s := mustCreate(t, fsys, Options{})
	must(t, s.Append(hardState(1, 1, 3), ents(1, 5, 1)))
	must(t, s.Sync())
	// Conflicting: term 2 at index 4, where the log has term 1.
	must(t, s.SaveSnapshot(snapshot(4, 2, "leader@4")))
	if s.LastIndex() != 4 {
		t.Fatalf("last index %d after a conflicting snapshot", s.LastIndex())
	}
	must(t, s.Close())
	_, rec := mustOpen(t, fsys, Options{})
	if rec.Snapshot.GetMetadata().GetIndex() != 4 || len(rec.Entries) != 0 {
		t.Fatalf("snapshot %v entries %s", rec.Snapshot.GetMetadata(), describeEntries(rec.Entries))
	}
	if rec.HardState.GetCommit() != 4 {
		t.Fatalf("commit %d, want raised to the snapshot's 4", rec.HardState.GetCommit())
	}
	// Past the end.
	s, _ = mustOpen(t, fsys, Options{})
	must(t, s.SaveSnapshot(snapshot(100, 3, "leader@100")))
	must(t, s.Append(hardState(3, 0, 100), ents(101, 102, 3)))
	must(t, s.Sync())
	must(t, s.Close())
	_, rec = mustOpen(t, fsys, Options{})
	if rec.Snapshot.GetMetadata().GetIndex() != 100 || describeEntries(rec.Entries) != describeEntries(ents(101, 102, 3)) {
		t.Fatalf("snapshot %v entries %s", rec.Snapshot.GetMetadata(), describeEntries(rec.Entries))
	}
}

func TestAppendRefusesWhatRaftNeverSends(t *testing.T) {
	s := mustCreate(t, NewSimFS(), Options{})
	must(t, s.Append(nil, ents(1, 3, 1)))
	for _, tc := range []struct {
		name string
		ents []*raftpb.Entry
	}{
		{"gap", ents(5, 6, 1)},
		{"index zero", []*raftpb.Entry{ent(0, 1, "x")}},
		{"not contiguous", []*raftpb.Entry{ent(4, 1, "a"), ent(6, 1, "b")}},
		{"terms decrease", []*raftpb.Entry{ent(4, 2, "a"), ent(5, 1, "b")}},
		{"too large", []*raftpb.Entry{{Index: proto.Uint64(4), Term: proto.Uint64(1), Data: make([]byte, RecordBodyBytesMax)}}},
	} {
		if err := s.Append(nil, tc.ents); err == nil {
			t.Errorf("%s: Append accepted %s", tc.name, describeEntries(tc.ents))
		}
	}
	must(t, s.Sync())
	must(t, s.SaveSnapshot(snapshot(2, 1, "s")))
	if err := s.Append(nil, ents(2, 2, 1)); err == nil {
		t.Error("Append overwrote an entry covered by a snapshot")
	}
	// The refusals wrote nothing: the Storage still works.
	must(t, s.Append(nil, ents(4, 4, 1)))
	must(t, s.Sync())
}

// TestOpenMakesRecoveredDurable: records a process wrote but never synced
// survive its exit in the page cache; Open returns them, raft takes them as
// persisted, so Open must make them durable before returning (found by
// TestStorageAgainstModel).
func TestOpenMakesRecoveredDurable(t *testing.T) {
	fsys := NewSimFS()
	s := mustCreate(t, fsys, Options{SegmentSizeBytes: 200})
	must(t, s.Append(hardState(1, 1, 0), ents(1, 12, 1))) // rolls over; never synced
	must(t, s.Close())                                    // the process exits; the machine stays up
	_, rec := mustOpen(t, fsys, Options{SegmentSizeBytes: 200})
	if len(rec.Entries) != 12 {
		t.Fatalf("clean reopen returned %d entries", len(rec.Entries))
	}
	fsys.Crash(nil, CrashLoseUnsynced)
	_, rec2 := mustOpen(t, fsys, Options{SegmentSizeBytes: 200})
	if got, want := describeRecovered(rec2), describeRecovered(rec); got != want {
		t.Fatalf("what Open returned was lost in a crash after it:\n got %s\nwant %s", got, want)
	}
}

// TestSnapshotFallbackThenSaveAgain: after Open fell back past a damaged
// newest snapshot (setting the file aside as .broken, and saying so), raft
// resumes from the older one and will save snapshots below the damaged
// one's index; Storage takes them. The damaged file is kept, never read.
func TestSnapshotFallbackThenSaveAgain(t *testing.T) {
	fsys := NewSimFS()
	opts := Options{SegmentSizeBytes: 300, SnapshotsKept: 2}
	s := mustCreate(t, fsys, opts)
	must(t, s.Append(hardState(1, 1, 30), ents(1, 30, 1)))
	must(t, s.Sync())
	must(t, s.SaveSnapshot(snapshot(10, 1, "state@10")))
	must(t, s.SaveSnapshot(snapshot(20, 1, "state@20")))
	must(t, s.Close())
	must(t, fsys.FlipBit("snap/"+snapName(20, 1), 8*50))
	s, rec := mustOpen(t, fsys, opts)
	if rec.Snapshot.GetMetadata().GetIndex() != 10 {
		t.Fatalf("fell back to %d", rec.Snapshot.GetMetadata().GetIndex())
	}
	damaged := "snap/" + snapName(20, 1)
	if len(rec.Notes) != 1 || rec.Notes[0].Kind != RecoverySnapshotSetAside || rec.Notes[0].File != damaged ||
		rec.Notes[0].KeptAs != damaged+".broken" || !strings.Contains(rec.Notes[0].Reason, "payload checksum") {
		t.Fatalf("notes %v, want the damaged snapshot set aside", rec.Notes)
	}
	t.Log(rec.Notes[0])
	must(t, s.SaveSnapshot(snapshot(15, 1, "state@15")))
	must(t, s.Append(hardState(1, 1, 32), ents(31, 32, 1)))
	must(t, s.Sync())
	must(t, s.Close())
	names, _ := fsys.List("snap")
	if strings.Join(names, ",") != snapName(10, 1)+","+snapName(15, 1)+","+snapName(20, 1)+".broken" {
		t.Fatalf("snapshot files %v: want 10, 15 and the damaged 20 kept aside", names)
	}
	_, rec = mustOpen(t, fsys, opts)
	if rec.Snapshot.GetMetadata().GetIndex() != 15 || rec.Entries[0].GetIndex() != 16 || len(rec.Entries) != 17 {
		t.Fatalf("snapshot %d entries %s", rec.Snapshot.GetMetadata().GetIndex(), describeEntries(rec.Entries))
	}
	// And saving the damaged one's index again works too: the new record
	// vouches for the new file. Damaged again, it is set aside under a
	// name of its own: the first one kept aside stays.
	s, _ = mustOpen(t, fsys, opts)
	must(t, s.SaveSnapshot(snapshot(20, 1, "state@20 again")))
	must(t, s.Close())
	_, rec = mustOpen(t, fsys, opts)
	if string(rec.Snapshot.GetData()) != "state@20 again" || len(rec.Notes) != 0 {
		t.Fatalf("snapshot %q, notes %v", rec.Snapshot.GetData(), rec.Notes)
	}
	must(t, fsys.FlipBit(damaged, 8*50))
	_, rec = mustOpen(t, fsys, opts)
	if len(rec.Notes) != 1 || rec.Notes[0].KeptAs != damaged+".broken.2" {
		t.Fatalf("notes %v", rec.Notes)
	}
	names, _ = fsys.List("snap")
	if !slices.Contains(names, snapName(20, 1)+".broken") || !slices.Contains(names, snapName(20, 1)+".broken.2") {
		t.Fatalf("snapshot files %v: both damaged copies should be kept", names)
	}
}

// TestManySnapshotsInOneSegment: snapshot records pile up in a segment that
// never rolls over; the markers Storage keeps stay as few as the files, and
// Open still picks the newest.
func TestManySnapshotsInOneSegment(t *testing.T) {
	fsys := NewSimFS()
	opts := Options{SnapshotsKept: 3}
	s := mustCreate(t, fsys, opts)
	for i := uint64(1); i <= 300; i++ {
		must(t, s.Append(hardState(1, 1, i), ents(i, i, 1)))
		must(t, s.Sync())
		must(t, s.SaveSnapshot(snapshot(i, 1, fmt.Sprintf("state@%d", i))))
		if len(s.markers) > opts.SnapshotsKept+2 {
			t.Fatalf("after %d snapshots Storage keeps %d markers", i, len(s.markers))
		}
	}
	must(t, s.Close())
	names, _ := fsys.List("snap")
	if len(names) != 3 {
		t.Fatalf("snapshot files %v", names)
	}
	_, rec := mustOpen(t, fsys, opts)
	if rec.Snapshot.GetMetadata().GetIndex() != 300 || len(rec.Entries) != 0 {
		t.Fatalf("snapshot %d entries %s", rec.Snapshot.GetMetadata().GetIndex(), describeEntries(rec.Entries))
	}
}

// TestSegmentsArePreallocated: every segment is allocated SegmentSizeBytes
// before records go into it, durably; records land at the end of the data,
// so a clean reopen keeps the allocation (the zeros after the data are the
// end, not damage) and appends continue into it. A segment written without
// preallocation (by an earlier version) is allocated by Open.
func TestSegmentsArePreallocated(t *testing.T) {
	const segmentSizeBytes = 1000
	opts := Options{SegmentSizeBytes: segmentSizeBytes}
	fsys := NewSimFS()
	s := mustCreate(t, fsys, opts)
	seg0 := "wal/" + segmentName(0, 1)
	if size, _ := fsys.Stat(seg0); size != segmentSizeBytes || fsys.DurableSize(seg0) != segmentSizeBytes {
		t.Fatalf("first segment %d bytes, %d durable, want %d allocated durably", size, fsys.DurableSize(seg0), segmentSizeBytes)
	}
	must(t, s.Append(hardState(1, 1, 0), ents(1, 3, 1)))
	must(t, s.Sync())
	dataEnd := dataEndBytes(t, fsys, seg0)
	if dataEnd != s.openSegmentSizeBytes || dataEnd >= segmentSizeBytes {
		t.Fatalf("records end at %d, the data at %d", s.openSegmentSizeBytes, dataEnd)
	}
	must(t, s.Close())

	s, rec := mustOpen(t, fsys, opts)
	if len(rec.Entries) != 3 {
		t.Fatalf("reopen: %s", describeEntries(rec.Entries))
	}
	if size, _ := fsys.Stat(seg0); size != segmentSizeBytes || dataEndBytes(t, fsys, seg0) != dataEnd {
		t.Fatalf("reopen changed the segment: %d bytes, data to %d; want %d and %d", size, dataEndBytes(t, fsys, seg0), segmentSizeBytes, dataEnd)
	}
	must(t, s.Append(nil, ents(4, 4, 1)))
	must(t, s.Sync())
	if got := dataEndBytes(t, fsys, seg0); got != s.openSegmentSizeBytes || got <= dataEnd {
		t.Fatalf("append after reopen: data ends at %d, records at %d, before at %d", got, s.openSegmentSizeBytes, dataEnd)
	}
	// Roll over: the next segment is allocated, synced and its entry
	// synced before its first record.
	before := fsys.OpsCount()
	for i := uint64(5); len(s.segments) == 1; i++ {
		if i > 100 {
			t.Fatalf("no rollover after %d entries: %s", i, s)
		}
		must(t, s.Append(nil, ents(i, i, 1)))
	}
	seg1 := s.segments[1].name
	if size := fsys.DurableSize(seg1); size != segmentSizeBytes {
		t.Fatalf("new segment: %d bytes durable before its first Sync, want its allocation %d\n%s", size, segmentSizeBytes, fsys)
	}
	if fsys.OpsCount() == before {
		t.Fatal("no FS operations for a rollover")
	}
	must(t, s.Sync())
	last := s.LastIndex()
	must(t, s.Close())
	_, rec = mustOpen(t, fsys, opts)
	if n := len(rec.Entries); n != int(last) || rec.Entries[n-1].GetIndex() != last {
		t.Fatalf("after rollover: %s", describeEntries(rec.Entries))
	}

	// A WAL whose newest segment is not preallocated: Open allocates it.
	legacy := NewSimFS()
	s = mustCreate(t, legacy, opts)
	must(t, s.Append(hardState(1, 1, 0), ents(1, 2, 1)))
	must(t, s.Sync())
	must(t, s.Close())
	f, err := legacy.OpenAppend(seg0)
	must(t, err)
	must(t, f.Truncate(dataEndBytes(t, legacy, seg0)))
	must(t, f.Sync())
	must(t, f.Close())
	s, _ = mustOpen(t, legacy, opts)
	if size, _ := legacy.Stat(seg0); size != segmentSizeBytes || legacy.DurableSize(seg0) != segmentSizeBytes {
		t.Fatalf("Open left an unallocated segment at %d bytes (%d durable)", size, legacy.DurableSize(seg0))
	}
	must(t, s.Close())
}

// TestStrayBytesInAllocatedSpace: non-zero bytes in the zeros after the
// newest segment's last record (a write that went astray, a flipped bit in
// unused space) are not records and hold nothing acknowledged: Open cuts
// them (durably) and says so, naming the exact offset of the stray byte.
// A stray byte that is a record end marker could be the last byte of
// records whose first blocks were lost, so that is refused, naming the
// same offset. Right after the data, where a record header could be torn,
// any byte is a torn tail, cut.
func TestStrayBytesInAllocatedSpace(t *testing.T) {
	for _, distanceBytes := range []int64{0, 7, recordHeaderSizeBytes - 1, recordHeaderSizeBytes, 100, 4096, DefaultSegmentSizeBytes} {
		for _, stray := range []byte{0x5a, recordEndMarker} {
			t.Run(fmt.Sprintf("at+%d/%#x", distanceBytes, stray), func(t *testing.T) {
				fsys, seg := syncedWAL(t, 4)
				dataEnd := dataEndBytes(t, fsys, seg)
				at := min(dataEnd+distanceBytes, DefaultSegmentSizeBytes-1)
				f, err := fsys.OpenAppend(seg)
				must(t, err)
				_, err = f.WriteAt([]byte{stray}, at)
				must(t, err)
				must(t, f.Sync())
				must(t, f.Close())
				before := fsys.String()
				_, rec, err := Open(fsys, "wal", "snap", Options{})
				tornShape := at-dataEnd <= 4 || (at-dataEnd >= 24 && at-dataEnd < recordHeaderSizeBytes)
				if stray == recordEndMarker && !tornShape {
					var ce *CorruptError
					if !errors.As(err, &ce) || ce.File != seg || ce.OffsetBytes != at || !errors.Is(err, ErrCorrupt) ||
						!strings.Contains(err.Error(), fmt.Sprintf("corrupt data in %s at offset %d: 1 non-zero bytes at offsets %d to %d, after zeros from offset %d", seg, at, at, at, dataEnd)) {
						t.Fatalf("a stray end marker at %d, %d after the data: Open = %v, want a CorruptError at %d", at, at-dataEnd, err, at)
					}
					if fsys.String() != before {
						t.Fatal("a refused Open changed the FS")
					}
					return
				}
				if err != nil {
					t.Fatalf("a stray byte at %d, %d after the data: %v", at, at-dataEnd, err)
				}
				checkPrefixOf(t, rec, 4)
				if len(rec.Notes) != 1 {
					t.Fatalf("notes %v, want one for the cut", rec.Notes)
				}
				n := rec.Notes[0]
				wantKind, wantOffset, wantSize := RecoveryStrayBytesCut, at, int64(1)
				if tornShape {
					wantKind, wantOffset, wantSize = RecoveryTornTailCut, dataEnd, at-dataEnd+1
				}
				if n.Kind != wantKind || n.File != seg || n.OffsetBytes != wantOffset || n.SizeBytes != wantSize || n.RecordsEndBytes != dataEnd || !n.Warn() {
					t.Fatalf("note %+v, want %s of %d bytes at %d", n, wantKind, wantSize, wantOffset)
				}
				t.Log(n)
				fsys.Crash(nil, CrashLoseUnsynced)
				if got := dataEndBytes(t, fsys, seg); got != dataEnd {
					t.Fatalf("after Open and a crash the data ends at %d, want the cut at %d", got, dataEnd)
				}
				if _, rec := mustOpen(t, fsys, Options{}); len(rec.Notes) != 0 {
					t.Fatalf("the cut did not last: %v", rec.Notes)
				}
			})
		}
	}
}

// olderSegmentWAL writes entries 1..n in segments of a few records each and
// returns the FS and the name of the first segment (not the newest).
func olderSegmentWAL(t *testing.T, n uint64) (*SimFS, string) {
	t.Helper()
	fsys := NewSimFS()
	opts := Options{SegmentSizeBytes: 300}
	s := mustCreate(t, fsys, opts)
	for i := uint64(1); i <= n; i++ {
		must(t, s.Append(hardState(1, 1, i-1), ents(i, i, 1)))
		must(t, s.Sync())
	}
	if len(s.segments) < 2 {
		t.Fatalf("%d segments, want an older one", len(s.segments))
	}
	must(t, s.Close())
	return fsys, "wal/" + segmentName(0, 1)
}

// TestStrayBytesAfterAnOlderSegment: bytes after an older segment's last
// record (the next segment's header proves the log goes on from that
// record) are not part of the log: Open leaves them, reads on and says so,
// whatever they look like. Damage to an older segment's records is still
// refused, naming that segment and offset, not the chain break it causes.
func TestStrayBytesAfterAnOlderSegment(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bytes []byte
		gap   int64
	}{
		{"a stray byte", []byte{0x5a}, 100},
		{"a stray end marker", []byte{recordEndMarker}, 4000},
		{"right after the last record", []byte{1, 2, 3}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys, seg := olderSegmentWAL(t, 12)
			dataEnd := dataEndBytes(t, fsys, seg)
			f, err := fsys.OpenAppend(seg)
			must(t, err)
			_, err = f.WriteAt(tc.bytes, dataEnd+tc.gap)
			must(t, err)
			must(t, f.Sync())
			must(t, f.Close())
			_, rec := mustOpen(t, fsys, Options{SegmentSizeBytes: 300})
			checkPrefixOf(t, rec, 12)
			if len(rec.Notes) != 1 || rec.Notes[0].Kind != RecoveryStrayBytesIgnored || rec.Notes[0].File != seg ||
				rec.Notes[0].OffsetBytes != dataEnd+tc.gap || rec.Notes[0].SizeBytes != int64(len(tc.bytes)) {
				t.Fatalf("notes %v", rec.Notes)
			}
			t.Log(rec.Notes[0])
		})
	}
	t.Run("a damaged last record", func(t *testing.T) {
		fsys, seg := olderSegmentWAL(t, 12)
		dataEnd := dataEndBytes(t, fsys, seg)
		must(t, fsys.FlipBit(seg, (dataEnd-10)*8))
		_, _, err := Open(fsys, "wal", "snap", Options{SegmentSizeBytes: 300})
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.File != seg || ce.OffsetBytes >= dataEnd || !strings.Contains(err.Error(), "the damage is within the record's body") {
			t.Fatalf("Open = %v, want a refusal naming %s before offset %d", err, seg, dataEnd)
		}
		t.Log(err)
	})
}

// TestSnapshotWrittenThenCommitted: a snapshot file written while the log
// goes on taking appends counts only once committed. A crash between the
// two leaves the previous snapshot in force and the written file removed;
// after the commit Open loads it with the entries appended meanwhile.
func TestSnapshotWrittenThenCommitted(t *testing.T) {
	written := func() (*SimFS, *Storage, SnapshotFile) {
		fsys := NewSimFS()
		s := mustCreate(t, fsys, Options{})
		must(t, s.Append(hardState(1, 1, 10), ents(1, 10, 1)))
		must(t, s.Sync())
		must(t, s.SaveSnapshot(snapshot(5, 1, "state@5")))
		f, err := s.WriteSnapshotFile(snapshot(10, 1, "state@10"))
		must(t, err)
		must(t, s.Append(hardState(1, 1, 15), ents(11, 15, 1)))
		must(t, s.Sync())
		return fsys, s, f
	}

	crashed, _, _ := written()
	crashed.Crash(newRand(1), CrashLoseUnsynced)
	_, rec := mustOpen(t, crashed, Options{})
	if got := rec.Snapshot.GetMetadata().GetIndex(); got != 5 || describeEntries(rec.Entries) != describeEntries(ents(6, 15, 1)) {
		t.Fatalf("crash before the commit: snapshot %d entries %s", got, describeEntries(rec.Entries))
	}
	if names, _ := crashed.List("snap"); len(names) != 1 {
		t.Fatalf("snapshot files %v after Open, want the uncommitted one removed", names)
	}

	fsys, s, f := written()
	must(t, s.CommitSnapshot(f))
	must(t, s.Close())
	_, rec = mustOpen(t, fsys, Options{})
	if got := rec.Snapshot.GetMetadata().GetIndex(); got != 10 || string(rec.Snapshot.GetData()) != "state@10" ||
		describeEntries(rec.Entries) != describeEntries(ents(11, 15, 1)) {
		t.Fatalf("after the commit: snapshot %d entries %s", got, describeEntries(rec.Entries))
	}
}

// TestSnapshotFileOvertaken: a snapshot written while the WAL saved a newer
// one (sent by the leader) is removed at its commit, not committed behind
// the newer one and not an error.
func TestSnapshotFileOvertaken(t *testing.T) {
	fsys := NewSimFS()
	s := mustCreate(t, fsys, Options{})
	must(t, s.Append(hardState(1, 1, 10), ents(1, 10, 1)))
	must(t, s.Sync())
	f, err := s.WriteSnapshotFile(snapshot(8, 1, "local@8"))
	must(t, err)
	must(t, s.SaveSnapshot(snapshot(20, 2, "leader@20")))
	must(t, s.CommitSnapshot(f))
	names, _ := fsys.List("snap")
	if len(names) != 1 || names[0] != snapName(20, 2) {
		t.Fatalf("snapshot files %v, want only the leader's", names)
	}
	must(t, s.Close())
	_, rec := mustOpen(t, fsys, Options{})
	if got := rec.Snapshot.GetMetadata().GetIndex(); got != 20 || len(rec.Entries) != 0 {
		t.Fatalf("snapshot %d entries %s", got, describeEntries(rec.Entries))
	}
}

// A snapshot file's payload, written in pieces around the data, is the
// protobuf encoding of the snapshot byte for byte: files written before and
// after read the same.
func TestSnapshotPayloadPiecesAreTheMarshalledSnapshot(t *testing.T) {
	cs := &raftpb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{9}}
	for _, snap := range []*raftpb.Snapshot{
		{Data: []byte("state"), Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(7), Term: proto.Uint64(2), ConfState: cs}},
		{Data: bytes.Repeat([]byte{0xab}, 300<<10), Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(1 << 40), Term: proto.Uint64(3)}},
		{Data: []byte("no metadata")},
		{Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(5), Term: proto.Uint64(1)}},
	} {
		want, err := marshalOptions.Marshal(snap)
		if err != nil {
			t.Fatal(err)
		}
		pieces, err := snapshotPayloadPieces(snap)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Join(pieces, nil); !bytes.Equal(got, want) {
			t.Fatalf("pieces of %d data bytes: %d bytes, differ from the %d marshalled", len(snap.GetData()), len(got), len(want))
		}
	}
}

// Decoding a snapshot file's payload without copying its data gives what
// proto.Unmarshal gives, for payloads as written and for any other shape.
func TestSnapshotPayloadDecodesAsProto(t *testing.T) {
	meta := &raftpb.SnapshotMetadata{Index: proto.Uint64(9), Term: proto.Uint64(2), ConfState: &raftpb.ConfState{Voters: []uint64{1}}}
	written := func(s *raftpb.Snapshot) []byte {
		pieces, err := snapshotPayloadPieces(s)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Join(pieces, nil)
	}
	metaBytes, _ := proto.Marshal(meta)
	field := func(num protowire.Number, v []byte) []byte {
		b := protowire.AppendTag(nil, num, protowire.BytesType)
		return protowire.AppendBytes(b, v)
	}
	payloads := map[string][]byte{
		"as written":         written(&raftpb.Snapshot{Data: []byte("state"), Metadata: meta}),
		"empty data":         written(&raftpb.Snapshot{Data: []byte{}, Metadata: meta}),
		"no data":            written(&raftpb.Snapshot{Metadata: meta}),
		"empty":              {},
		"metadata first":     append(field(2, metaBytes), field(1, []byte("x"))...),
		"data twice":         append(field(1, []byte("a")), field(1, []byte("b"))...),
		"metadata twice":     append(field(2, metaBytes), field(2, metaBytes)...),
		"unknown field":      append(field(1, []byte("a")), field(7, []byte("?"))...),
		"varint field":       protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 5),
		"truncated":          field(1, []byte("abcdef"))[:4],
		"bad metadata bytes": field(2, []byte{0xff}),
	}
	for name, p := range payloads {
		want := &raftpb.Snapshot{}
		wantErr := proto.Unmarshal(p, want)
		got, err := unmarshalSnapshotPayload(p)
		if (err != nil) != (wantErr != nil) {
			t.Errorf("%s: error %v, proto.Unmarshal's %v", name, err, wantErr)
			continue
		}
		if err == nil && !proto.Equal(got, want) {
			t.Errorf("%s: decoded %v, proto.Unmarshal %v", name, got, want)
		}
	}
}

package fuzz

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/metrics"
	"testing"

	"github.com/noded/noded/disk"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// FuzzDiskRecordDecode feeds arbitrary bytes to the WAL record decoder. It
// must never panic, must fail with one of its three damage kinds, and a
// record it accepts must re-encode to exactly the bytes it was read from
// (so nothing the checksums cover goes unchecked).
func FuzzDiskRecordDecode(f *testing.F) {
	var seed []byte
	var crc uint32
	for _, r := range []disk.Record{
		{Type: disk.RecordMetadata, Body: []byte("member")},
		{Type: disk.RecordEntry, Index: 1, Term: 1, Body: []byte{0x10, 0x01, 0x18, 0x01}},
		{Type: disk.RecordHardState, Index: 0, Term: 1},
	} {
		seed, crc = disk.AppendRecord(seed, r, crc)
		f.Add(bytes.Clone(seed), uint32(0))
	}
	f.Add([]byte{}, uint32(0))
	f.Add(make([]byte, 64), crc)
	f.Fuzz(func(t *testing.T, data []byte, prevCRC uint32) {
		rec, n, gotCRC, err := disk.DecodeRecord(data, prevCRC)
		if err != nil {
			if !errors.Is(err, disk.ErrRecordIncomplete) && !errors.Is(err, disk.ErrRecordHeaderCorrupt) && !errors.Is(err, disk.ErrRecordCorrupt) {
				t.Fatalf("error of no known kind: %v", err)
			}
			return
		}
		if n != disk.EncodedSizeBytes(len(rec.Body)) || n > len(data) {
			t.Fatalf("size %d for a body of %d in %d bytes", n, len(rec.Body), len(data))
		}
		again, againCRC := disk.AppendRecord(nil, rec, prevCRC)
		if !bytes.Equal(again, data[:n]) || againCRC != gotCRC {
			t.Fatalf("accepted record does not re-encode to its bytes:\n%x\n%x", data[:n], again)
		}
	})
}

// openWALOptions are what FuzzDiskOpenWAL opens with: segments allocated
// small, so that allocating the newest costs little.
var openWALOptions = disk.Options{SegmentSizeBytes: 4096}

// segmentSeparator splits FuzzDiskOpenWAL's input into files.
var segmentSeparator = []byte("\x00--noded-file--\x00")

// FuzzDiskOpenWAL builds a WAL directory from arbitrary bytes in a SimFS
// (the input split at segmentSeparator: each piece a segment, or a snapshot
// file if it starts with the snapshot magic) and opens it. Open must return
// an error or a consistent state, never panic, and never allocate in
// proportion to a length field it has not verified: its allocations are
// bounded by a multiple of the input's size. An opened WAL must take an
// append and reopen.
func FuzzDiskOpenWAL(f *testing.F) {
	for _, seed := range openWALSeeds(f) {
		f.Add(seed)
	}
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys := buildWALDir(t, data)
		before := heapAllocatedBytes()
		s, rec, err := disk.Open(fsys, "wal", "snap", openWALOptions)
		if allocated, limit := heapAllocatedBytes()-before, uint64(64*len(data)+(4<<20)); allocated > limit {
			t.Fatalf("Open of %d input bytes allocated %d bytes (limit %d)", len(data), allocated, limit)
		}
		if err != nil {
			return
		}
		next := uint64(1)
		if rec.Snapshot != nil {
			next = rec.Snapshot.GetMetadata().GetIndex() + 1
		}
		for _, e := range rec.Entries {
			if e.GetIndex() != next {
				t.Fatalf("recovered entries not contiguous: index %d, want %d", e.GetIndex(), next)
			}
			next++
		}
		if next-1 != s.LastIndex() {
			t.Fatalf("entries end at %d, storage says last index %d", next-1, s.LastIndex())
		}
		e := &raftpb.Entry{Index: proto.Uint64(next), Term: proto.Uint64(1 << 40), Data: []byte("after")}
		if err := s.Append(nil, []*raftpb.Entry{e}); err != nil {
			return // e.g. a snapshot at or past next: raft would not append there
		}
		if err := s.Sync(); err != nil {
			t.Fatalf("Sync after Open: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		_, rec2, err := disk.Open(fsys, "wal", "snap", openWALOptions)
		if err != nil {
			t.Fatalf("reopen after an append to an opened WAL: %v", err)
		}
		if n := len(rec2.Entries); n == 0 || rec2.Entries[n-1].GetIndex() != next {
			t.Fatalf("the append after Open was lost")
		}
	})
}

// heapAllocatedBytes returns the bytes allocated on the heap so far (it
// reads runtime/metrics, which does not stop the world as ReadMemStats does).
func heapAllocatedBytes() uint64 {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64()
}

// buildWALDir lays the input out as files: pieces starting with the
// snapshot magic become snap/<index>-<term>.snap (from their header, so
// that names can agree), the rest wal/<seq>-<firstIndex>.wal with the
// first index read where a segment header keeps it, and seq counting on
// from where the first segment's header says.
func buildWALDir(t *testing.T, data []byte) *disk.SimFS {
	fsys := disk.NewSimFS()
	for _, dir := range []string{"wal", "snap"} {
		if err := fsys.MkdirAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	seq := uint64(0)
	for _, piece := range bytes.Split(data, segmentSeparator) {
		var name string
		if bytes.HasPrefix(piece, []byte("NODEDSNP")) && len(piece) >= 40 {
			name = fmt.Sprintf("snap/%016x-%016x.snap", binary.LittleEndian.Uint64(piece[24:32]), binary.LittleEndian.Uint64(piece[32:40]))
		} else {
			firstIndex := uint64(1)
			if len(piece) >= 16 {
				firstIndex = binary.LittleEndian.Uint64(piece[8:16])
			}
			if len(piece) >= 40 && seq == 0 {
				seq = binary.LittleEndian.Uint64(piece[32:40]) // the first segment's own sequence number
			}
			name = fmt.Sprintf("wal/%016x-%016x.wal", seq, firstIndex)
			seq++
		}
		file, err := fsys.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := file.Write(piece); err != nil {
			t.Fatal(err)
		}
		if err := file.Sync(); err != nil {
			t.Fatal(err)
		}
		file.Close()
	}
	return fsys
}

// openWALSeeds writes real WALs (rollovers into preallocated segments,
// overwrites, snapshots) and returns each directory as FuzzDiskOpenWAL
// input: as written (segments are their records then allocated zeros), and
// with the newest segment's last record torn, once followed by its zeros
// and once at the end of the file.
func openWALSeeds(tb testing.TB) [][]byte {
	ent := func(i, term uint64) *raftpb.Entry {
		return &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(term), Data: []byte(fmt.Sprintf("v%d", i))}
	}
	hs := func(term, commit uint64) *raftpb.HardState {
		return &raftpb.HardState{Term: proto.Uint64(term), Vote: proto.Uint64(1), Commit: proto.Uint64(commit)}
	}
	snap := func(i, term uint64) *raftpb.Snapshot {
		return &raftpb.Snapshot{Data: []byte("state"), Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(i), Term: proto.Uint64(term)}}
	}
	var seeds [][]byte
	for variant := 0; variant < 3; variant++ {
		fsys := disk.NewSimFS()
		s, err := disk.Create(fsys, "wal", "snap", []byte("member-1"), disk.Options{SegmentSizeBytes: 300, SnapshotsKept: 2})
		if err != nil {
			tb.Fatal(err)
		}
		for i := uint64(1); i <= 12; i++ {
			term := uint64(1)
			if i > 8 {
				term = 2
			}
			if err := s.Append(hs(term, i-1), []*raftpb.Entry{ent(i, term)}); err != nil {
				tb.Fatal(err)
			}
		}
		if variant >= 1 {
			if err := s.Append(hs(3, 10), []*raftpb.Entry{ent(11, 3), ent(12, 3)}); err != nil { // overwrite
				tb.Fatal(err)
			}
			if err := s.Sync(); err != nil {
				tb.Fatal(err)
			}
		}
		if variant >= 2 {
			for _, i := range []uint64{4, 9} {
				if err := s.SaveSnapshot(snap(i, map[bool]uint64{true: 1, false: 2}[i <= 8])); err != nil {
					tb.Fatal(err)
				}
			}
		}
		if err := s.Sync(); err != nil {
			tb.Fatal(err)
		}
		s.Close()
		var files [][]byte
		newestSegment := -1
		for _, dir := range []string{"wal", "snap"} {
			names, err := fsys.List(dir)
			if err != nil {
				tb.Fatal(err)
			}
			for _, n := range names {
				file, err := fsys.Open(dir + "/" + n)
				if err != nil {
					tb.Fatal(err)
				}
				size, _ := fsys.Stat(dir + "/" + n)
				b := make([]byte, size)
				if _, err := file.ReadAt(b, 0); err != nil {
					tb.Fatal(err)
				}
				file.Close()
				if dir == "wal" {
					newestSegment = len(files)
				}
				files = append(files, b)
			}
		}
		newest := files[newestSegment]
		dataEnd := len(bytes.TrimRight(newest, "\x00"))
		if dataEnd == len(newest) {
			tb.Fatalf("variant %d: the newest segment has no allocated space after its data", variant)
		}
		tornOverZeros := append(bytes.Clone(newest[:dataEnd-3]), make([]byte, len(newest)-dataEnd+3)...)
		tornAtEnd := newest[:dataEnd-3]
		for _, newestVersion := range [][]byte{newest, tornOverZeros, tornAtEnd} {
			var input []byte
			for i, b := range files {
				if i == newestSegment {
					b = newestVersion
				}
				if i > 0 {
					input = append(input, segmentSeparator...)
				}
				input = append(input, b...)
			}
			seeds = append(seeds, input)
		}
	}
	return seeds
}

// TestDiskOpenWALSeedsOpen: the real WALs seeding FuzzDiskOpenWAL, laid out
// by buildWALDir, open (whole and with a torn tail), so the fuzzer starts
// from inputs that reach deep into Open rather than failing on the names.
// Open keeps the zeros after the data and cuts the torn record.
func TestDiskOpenWALSeedsOpen(t *testing.T) {
	for i, seed := range openWALSeeds(t) {
		fsys := buildWALDir(t, seed)
		names, err := fsys.List("wal")
		if err != nil {
			t.Fatal(err)
		}
		newest := "wal/" + names[len(names)-1]
		dataEndBefore := len(bytes.TrimRight(readWhole(t, fsys, newest), "\x00"))
		_, rec, err := disk.Open(fsys, "wal", "snap", openWALOptions)
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		if len(rec.Entries) == 0 {
			t.Fatalf("seed %d opened with no entries", i)
		}
		after := readWhole(t, fsys, newest)
		dataEndAfter := len(bytes.TrimRight(after, "\x00"))
		if torn := i%3 != 0; torn && dataEndAfter >= dataEndBefore || !torn && dataEndAfter != dataEndBefore {
			t.Fatalf("seed %d (torn %v): the newest segment's data ended at %d, after Open at %d", i, torn, dataEndBefore, dataEndAfter)
		}
		if int64(len(after)) < openWALOptions.SegmentSizeBytes {
			t.Fatalf("seed %d: after Open the newest segment is %d bytes, not allocated", i, len(after))
		}
	}
}

func readWhole(t *testing.T, fsys disk.FS, name string) []byte {
	t.Helper()
	size, err := fsys.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsys.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, size)
	if n, err := f.ReadAt(b, 0); n != len(b) {
		t.Fatalf("read %s: %d of %d bytes: %v", name, n, len(b), err)
	}
	return b
}

package disk

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// Each test here injects one SimFS fault class (sim-faults D3 to D6) into a
// WAL and checks what Open makes of it: a crash loses only unsynced data, a
// torn or zeroed tail is cut, and anything else damaged is refused with an
// error that names the file and the offset, never silently accepted.

var corruptMessage = regexp.MustCompile(`^disk: corrupt (record|data) in wal/[0-9a-f]{16}-[0-9a-f]{16}\.wal at offset \d+: `)

// syncedWAL writes entries 1..n (term 1) in one segment, all synced, and
// returns the FS and the segment's name.
func syncedWAL(t *testing.T, n uint64) (*SimFS, string) {
	t.Helper()
	fsys := NewSimFS()
	s := mustCreate(t, fsys, Options{})
	for i := uint64(1); i <= n; i++ {
		must(t, s.Append(hardState(1, 1, i-1), ents(i, i, 1)))
		must(t, s.Sync())
	}
	must(t, s.Close())
	return fsys, "wal/" + segmentName(0, 1)
}

// checkPrefixOf checks that recovered entries are exactly entries 1..k of
// term 1, for some k >= atLeast: nothing altered, nothing after a gap.
func checkPrefixOf(t *testing.T, rec Recovered, atLeast uint64) {
	t.Helper()
	k := uint64(len(rec.Entries))
	if k < atLeast {
		t.Fatalf("recovered %d entries, %d were synced", k, atLeast)
	}
	if got, want := describeEntries(rec.Entries), describeEntries(ents(1, k, 1)); got != want {
		t.Fatalf("recovered entries differ from those written:\n got %s\nwant %s", got, want)
	}
}

// TestFaultFsyncError (D6): a failed fsync is returned, and every later
// call returns it too: the member stops instead of retrying and
// acknowledging. After the crash that follows, only what was synced before
// is guaranteed, and Open works.
func TestFaultFsyncError(t *testing.T) {
	for _, where := range []string{"sync", "rollover", "rollover allocation", "rollover dir", "snapshot file", "snapshot dir"} {
		t.Run(where, func(t *testing.T) {
			fsys := NewSimFS()
			s := mustCreate(t, fsys, Options{SegmentSizeBytes: 400})
			must(t, s.Append(hardState(1, 1, 3), ents(1, 3, 1)))
			must(t, s.Sync())
			eio := errors.New("input/output error")
			var err error
			switch where {
			case "sync":
				must(t, s.Append(nil, ents(4, 5, 1)))
				fsys.FailNextSync(eio)
				err = s.Sync()
			case "rollover", "rollover allocation", "rollover dir":
				// The syncs of a rollover: the full segment, then the next
				// one's allocation, then the directory holding it.
				fsys.FailNthSync(map[string]int{"rollover": 1, "rollover allocation": 2, "rollover dir": 3}[where], eio)
				for i := uint64(4); i < 40 && err == nil; i++ {
					err = s.Append(nil, ents(i, i, 1))
				}
			case "snapshot file":
				fsys.FailNextSync(eio)
				err = s.SaveSnapshot(snapshot(2, 1, "s"))
			case "snapshot dir":
				fsys.FailNthSync(2, eio) // the file's fsync passes, the directory's fails
				err = s.SaveSnapshot(snapshot(2, 1, "s"))
			}
			if !errors.Is(err, eio) {
				t.Fatalf("got %v, want the injected fsync error", err)
			}
			if err2 := s.Sync(); !errors.Is(err2, eio) {
				t.Fatalf("Sync after a failed fsync returned %v: the error must stick", err2)
			}
			if err2 := s.Append(nil, ents(50, 50, 1)); !errors.Is(err2, eio) {
				t.Fatalf("Append after a failed fsync returned %v", err2)
			}
			fsys.Crash(newRand(7), CrashLoseUnsynced)
			_, rec := mustOpen(t, fsys, Options{SegmentSizeBytes: 400})
			checkPrefixOf(t, rec, 3)
		})
	}
}

// TestFaultBitFlipAnywhereIsRefused (D4): a WAL whose every record was
// synced, with one bit flipped at any byte of its data (every byte is
// tried, in the head, the middle and the very last record), is refused
// with a CorruptError naming the file and the offset of the damaged
// record; it is never opened with the damage cut away or let through.
func TestFaultBitFlipAnywhereIsRefused(t *testing.T) {
	fsys, seg := syncedWAL(t, 6)
	size := dataEndBytes(t, fsys, seg)
	data, _, err := readSegment(fsys, seg)
	must(t, err)
	recordStarts := map[int64]bool{}
	for off := 0; off < len(data); {
		_, n, _, err := DecodeRecord(data[off:], 0) // chain not needed for framing
		if err != nil && !errors.Is(err, ErrRecordCorrupt) {
			t.Fatalf("framing at %d: %v", off, err)
		}
		if n == 0 {
			n = recordSizeFromHeader(data[off:])
		}
		recordStarts[int64(off)] = true
		off += n
	}
	for byteOffset := int64(0); byteOffset < size; byteOffset++ {
		bit := byteOffset*8 + byteOffset%8
		must(t, fsys.FlipBit(seg, bit))
		_, _, err := Open(fsys, "wal", "snap", Options{})
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Fatalf("bit %d (byte %d) flipped: Open returned %v, want a CorruptError", bit, byteOffset, err)
		}
		if ce.File != seg || !recordStarts[ce.OffsetBytes] || ce.OffsetBytes > byteOffset {
			t.Fatalf("bit %d flipped: error names %s offset %d; want %s at the start of the record holding byte %d",
				bit, ce.File, ce.OffsetBytes, seg, byteOffset)
		}
		if !corruptMessage.MatchString(err.Error()) || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error text %q", err)
		}
		must(t, fsys.FlipBit(seg, bit)) // undo
	}
	_, rec := mustOpen(t, fsys, Options{})
	checkPrefixOf(t, rec, 6)
}

// TestFaultBitFlipInTail pins the rule for damage at the end of the newest
// segment. Open cannot know which bytes were synced, so it judges by shape:
// a record cut short or followed only by zeros is a torn write and is cut;
// a whole record that fails its checksum is refused, even as the very last
// record and even if it had never been synced (refusing costs a repair;
// cutting could lose an acknowledged write).
func TestFaultBitFlipInTail(t *testing.T) {
	t.Run("synced last record is refused", func(t *testing.T) {
		fsys, seg := syncedWAL(t, 4)
		size := dataEndBytes(t, fsys, seg)
		must(t, fsys.FlipBit(seg, (size-10)*8))
		_, _, err := Open(fsys, "wal", "snap", Options{})
		if !errors.Is(err, ErrCorrupt) || !corruptMessage.MatchString(err.Error()) {
			t.Fatalf("Open = %v, want a refusal", err)
		}
	})
	t.Run("unsynced last record lost in the crash", func(t *testing.T) {
		fsys, seg := syncedWAL(t, 4)
		s, _ := mustOpen(t, fsys, Options{})
		must(t, s.Append(nil, ents(5, 5, 1))) // not synced
		size := dataEndBytes(t, fsys, seg)
		must(t, fsys.FlipBit(seg, (size-10)*8))
		fsys.Crash(nil, CrashLoseUnsynced)
		_, rec := mustOpen(t, fsys, Options{})
		checkPrefixOf(t, rec, 4)
		if len(rec.Entries) != 4 {
			t.Fatalf("the unsynced entry survived a lose-unsynced crash")
		}
	})
	t.Run("unsynced last record still there is refused", func(t *testing.T) {
		fsys, seg := syncedWAL(t, 4)
		s, _ := mustOpen(t, fsys, Options{})
		must(t, s.Append(nil, ents(5, 5, 1)))
		must(t, s.Close()) // no crash: the page cache still holds it
		size := dataEndBytes(t, fsys, seg)
		must(t, fsys.FlipBit(seg, (size-10)*8))
		if _, _, err := Open(fsys, "wal", "snap", Options{}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open = %v, want a refusal", err)
		}
	})
	t.Run("unsynced tail torn then flipped never yields altered data", func(t *testing.T) {
		refused, opened := 0, 0
		for seed := uint64(0); seed < 40; seed++ {
			fsys, seg := syncedWAL(t, 4)
			s, _ := mustOpen(t, fsys, Options{})
			sizeBefore := dataEndBytes(t, fsys, seg) // all synced by Open
			must(t, s.Append(nil, ents(5, 8, 1)))
			fsys.Crash(newRand(seed), CrashTorn)
			size := dataEndBytes(t, fsys, seg)
			if size > sizeBefore {
				rng := newRand(seed + 1000)
				must(t, fsys.FlipBit(seg, sizeBefore*8+rng.Int64N((size-sizeBefore)*8)))
			}
			_, rec, err := Open(fsys, "wal", "snap", Options{})
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("seed %d: %v", seed, err)
				}
				refused++
				continue
			}
			opened++
			checkPrefixOf(t, rec, 4)
		}
		t.Logf("refused %d, opened %d", refused, opened)
		if refused == 0 || opened == 0 {
			t.Fatalf("expected both outcomes over 40 seeds: refused %d opened %d", refused, opened)
		}
	})
}

// TestFaultMisdirectedWrite (D5): a batch that lands at the wrong offset
// breaks the chain where it lands and leaves a hole where it was aimed;
// Open refuses instead of returning misplaced or missing records.
func TestFaultMisdirectedWrite(t *testing.T) {
	recordSizeBytes := int64(EncodedSizeBytes(len(mustMarshal(ent(5, 1, "e5t1")))))
	for _, delta := range []int64{-1, -7, -recordSizeBytes, -2 * recordSizeBytes, 1, 8, recordSizeBytes, 4096, -1 << 20} {
		for _, thenMore := range []bool{false, true} {
			t.Run(fmt.Sprintf("delta=%d/more=%v", delta, thenMore), func(t *testing.T) {
				fsys, _ := syncedWAL(t, 4)
				s, _ := mustOpen(t, fsys, Options{})
				fsys.MisdirectNextWrite(delta)
				must(t, s.Append(nil, ents(5, 5, 1)))
				must(t, s.Sync())
				if thenMore {
					must(t, s.Append(hardState(1, 1, 5), ents(6, 7, 1)))
					must(t, s.Sync())
				}
				must(t, s.Close())
				_, rec, err := Open(fsys, "wal", "snap", Options{})
				if err == nil {
					t.Fatalf("misdirected write accepted; recovered %s", describeEntries(rec.Entries))
				}
				if !errors.Is(err, ErrCorrupt) || !corruptMessage.MatchString(err.Error()) {
					t.Fatalf("Open = %v", err)
				}
			})
		}
	}
}

// TestFaultZeroTail (D3): a crash that leaves zeros where unsynced records
// were is the end of the data, or a torn tail if part of a record is left
// before them: Open cuts that, keeps every synced record and the segment's
// allocation (durably), and later appends reopen cleanly.
func TestFaultZeroTail(t *testing.T) {
	cut := 0
	for seed := uint64(0); seed < 30; seed++ {
		fsys, seg := syncedWAL(t, 4)
		s, _ := mustOpen(t, fsys, Options{})
		must(t, s.Append(hardState(1, 1, 4), ents(5, 9, 1)))
		fsys.Crash(newRand(seed), CrashZeroTail)
		dataEndAfterCrash := dataEndBytes(t, fsys, seg)
		s, rec := mustOpen(t, fsys, Options{})
		checkPrefixOf(t, rec, 4)
		dataEndAfterOpen := dataEndBytes(t, fsys, seg)
		if dataEndAfterOpen < dataEndAfterCrash {
			cut++
		}
		if dataEndAfterOpen != s.openSegmentSizeBytes {
			t.Fatalf("seed %d: data ends at %d after Open, its records at %d", seed, dataEndAfterOpen, s.openSegmentSizeBytes)
		}
		if size, _ := fsys.Stat(seg); size != DefaultSegmentSizeBytes || fsys.DurableSize(seg) != size {
			t.Fatalf("seed %d: after Open the segment is %d bytes, %d durable; want its allocation, %d, kept durably",
				seed, size, fsys.DurableSize(seg), DefaultSegmentSizeBytes)
		}
		must(t, s.Close())
		fsys.Crash(nil, CrashLoseUnsynced) // the cut was synced: a crash now keeps it
		if got := dataEndBytes(t, fsys, seg); got != dataEndAfterOpen {
			t.Fatalf("seed %d: the cut is not durable: data ends at %d after a crash, %d before", seed, got, dataEndAfterOpen)
		}
		s, _ = mustOpen(t, fsys, Options{})
		next := uint64(len(rec.Entries)) + 1
		must(t, s.Append(nil, ents(next, next+1, 1)))
		must(t, s.Sync())
		must(t, s.Close())
		_, rec = mustOpen(t, fsys, Options{})
		checkPrefixOf(t, rec, next+1)
	}
	if cut == 0 {
		t.Fatal("no seed left a zeroed tail to cut")
	}
}

// TestOpenRefusalChangesNothing: a refused Open leaves the files as they were.
func TestOpenRefusalChangesNothing(t *testing.T) {
	fsys, seg := syncedWAL(t, 4)
	must(t, fsys.FlipBit(seg, 8*200))
	before := fsys.String()
	if _, _, err := Open(fsys, "wal", "snap", Options{}); err == nil {
		t.Fatal("Open accepted a damaged WAL")
	}
	if after := fsys.String(); after != before {
		t.Fatalf("a refused Open changed the FS:\n%s\n%s", before, after)
	}
	if !strings.Contains(before, seg) {
		t.Fatalf("String() does not list %s:\n%s", seg, before)
	}
}

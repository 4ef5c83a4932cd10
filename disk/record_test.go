package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

func TestRecordRoundTripAndChain(t *testing.T) {
	var buf []byte
	var crc uint32
	recs := []Record{
		{Type: RecordMetadata, Body: []byte("m")},
		{Type: RecordEntry, Index: 7, Term: 3, Body: []byte("payload")},
		{Type: RecordHardState, Index: 5, Term: 3, Body: nil},
	}
	var crcs []uint32
	for _, r := range recs {
		buf, crc = AppendRecord(buf, r, crc)
		crcs = append(crcs, crc)
	}
	off, prev := 0, uint32(0)
	for i, want := range recs {
		got, n, c, err := DecodeRecord(buf[off:], prev)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if got.Type != want.Type || got.Index != want.Index || got.Term != want.Term || !bytes.Equal(got.Body, want.Body) || c != crcs[i] {
			t.Fatalf("record %d: got %+v", i, got)
		}
		off += n
		prev = c
	}
	// The second record decoded with the wrong predecessor fails: chained.
	first := EncodedSizeBytes(1)
	if _, _, _, err := DecodeRecord(buf[first:], 0); !errors.Is(err, ErrRecordCorrupt) {
		t.Fatalf("unchained decode: %v", err)
	}
}

// TestRecordDamageKinds: each kind of damage maps to its error, and no
// length is trusted before the header checksum.
func TestRecordDamageKinds(t *testing.T) {
	rec, _ := AppendRecord(nil, Record{Type: RecordEntry, Index: 1, Term: 1, Body: []byte("0123456789")}, 0)
	for _, tc := range []struct {
		name string
		mut  func([]byte) []byte
		want error
	}{
		{"short header", func(b []byte) []byte { return b[:10] }, ErrRecordIncomplete},
		{"short body", func(b []byte) []byte { return b[:len(b)-3] }, ErrRecordIncomplete},
		{"length bit", func(b []byte) []byte { b[2] ^= 0x10; return b }, ErrRecordHeaderCorrupt},
		{"index bit", func(b []byte) []byte { b[9] ^= 1; return b }, ErrRecordHeaderCorrupt},
		{"body bit", func(b []byte) []byte { b[35] ^= 1; return b }, ErrRecordCorrupt},
		{"end marker", func(b []byte) []byte { b[len(b)-1] = 0; return b }, ErrRecordCorrupt},
		{"zeros", func(b []byte) []byte { return make([]byte, len(b)) }, ErrRecordHeaderCorrupt},
	} {
		b := tc.mut(bytes.Clone(rec))
		if _, _, _, err := DecodeRecord(b, 0); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// scanBytes reads data as Open reads a segment (readSegment: up to the last
// non-zero byte) and scans it.
func scanBytes(t *testing.T, data []byte) (segmentScan, error) {
	t.Helper()
	fsys := NewSimFS()
	f, err := fsys.Create("x.wal")
	must(t, err)
	_, err = f.Write(data)
	must(t, err)
	read, sizeBytes, err := readSegment(fsys, "x.wal")
	must(t, err)
	if sizeBytes != int64(len(data)) || !bytes.Equal(read, bytes.TrimRight(data, "\x00")) {
		t.Fatalf("readSegment returned %d of %d bytes, size %d", len(read), len(data), sizeBytes)
	}
	return scanSegment("wal/x.wal", read)
}

// TestScanSegmentTail pins the tail rule: zeros after the last whole record
// are the end of the data; what has the shape of a torn write (ends inside
// a record, or a damaged header followed only by zeros) may be cut; so may
// stray bytes after zeros where the next record would start, unless they
// end in a record end marker (records whose first blocks were lost end so);
// a damaged whole record is refused even at the very end.
func TestScanSegmentTail(t *testing.T) {
	s := &Storage{metadata: []byte("m")}
	seg, crc := s.encodeHead(nil, segmentInfo{seq: 0, firstIndex: 1}, 0)
	headEnd := len(seg)
	seg, crc = AppendRecord(seg, Record{Type: RecordEntry, Index: 1, Term: 1, Body: mustMarshal(ent(1, 1, "one"))}, crc)
	oneEnd := len(seg)
	seg, _ = AppendRecord(seg, Record{Type: RecordEntry, Index: 2, Term: 1, Body: mustMarshal(ent(2, 1, "two"))}, crc)
	zeros := func(n int) []byte { return make([]byte, n) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	damagedHeader := flip(seg, oneEnd+3)[oneEnd : oneEnd+recordHeaderSizeBytes]
	for _, tc := range []struct {
		name     string
		data     []byte
		validEnd int
		kind     tailKind
		cuttable bool
		// firstNonZero is checked for stray tails.
		firstNonZero int
	}{
		{"whole", seg, len(seg), tailNone, false, 0},
		{"whole, then allocated zeros", cat(seg, zeros(4096)), len(seg), tailNone, false, 0},
		{"head only, then allocated zeros", cat(seg[:headEnd], zeros(200)), headEnd, tailNone, false, 0},
		{"cut in last body", seg[:len(seg)-5], oneEnd, tailTorn, true, 0},
		{"cut in last header", seg[:oneEnd+20], oneEnd, tailTorn, true, 0},
		{"last zeroed from mid-body", cat(seg[:oneEnd+40], zeros(len(seg)-oneEnd-40+100)), oneEnd, tailTorn, true, 0},
		{"last header zeroed", cat(seg[:oneEnd+5], zeros(300)), oneEnd, tailTorn, true, 0},
		{"last end marker zeroed", cat(seg[:len(seg)-1], zeros(1)), oneEnd, tailTorn, true, 0},
		{"damaged header, then zeros", cat(seg[:oneEnd], damagedHeader, zeros(100)), oneEnd, tailTorn, true, 0},
		{"a stray byte right after the last record", cat(seg, []byte{7}, zeros(100)), len(seg), tailTorn, true, 0},
		{"bit flip in last record", flip(seg, oneEnd+35), oneEnd, tailCorrupt, false, 0},
		{"bit flip in last record, then zeros", cat(flip(seg, oneEnd+35), zeros(100)), oneEnd, tailCorrupt, false, 0},
		{"bit flip in last length", flip(seg, oneEnd+1), oneEnd, tailCorrupt, false, 0},
		{"bit flip in middle", flip(seg, headEnd+35), headEnd, tailCorrupt, false, 0},
		{"damaged header, then data after zeros", cat(seg[:oneEnd], damagedHeader, zeros(100), []byte{1}), oneEnd, tailCorrupt, false, 0},
		{"zeros then records", cat(seg[:oneEnd], zeros(64), seg[oneEnd:]), oneEnd, tailStray, false, oneEnd + 64},
		{"whole, zeros, then a stray byte", cat(seg, zeros(recordHeaderSizeBytes), []byte{1}, zeros(50)), len(seg), tailStray, true, len(seg) + recordHeaderSizeBytes},
		{"whole, zeros, then a stray end marker", cat(seg, zeros(4000), []byte{recordEndMarker}, zeros(50)), len(seg), tailStray, false, len(seg) + 4000},
		{"a stray byte where the next record's index would be", cat(seg, zeros(10), []byte{9}, zeros(50)), len(seg), tailStray, true, len(seg) + 10},
		{"a stray byte where the next record's checksum would be", cat(seg, zeros(26), []byte{9}, zeros(50)), len(seg), tailTorn, true, 0},
		{"a stray kilobyte far out", cat(seg, zeros(1<<20), bytes.Repeat([]byte{0x5a}, 1024), zeros(50)), len(seg), tailStray, true, len(seg) + 1<<20},
		{"zeros then records torn short", cat(seg[:oneEnd], zeros(64), seg[oneEnd:len(seg)-3]), oneEnd, tailStray, false, oneEnd + 64},
		{"a record written 40 bytes off, then a torn write", cat(seg[:oneEnd], zeros(40), seg[oneEnd:], bytes.Repeat([]byte{0x33}, 10)), oneEnd, tailStray, false, oneEnd + 40},
	} {
		sc, err := scanBytes(t, tc.data)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if sc.validEndBytes != int64(tc.validEnd) || sc.tail.kind != tc.kind || (sc.tail.kind != tailNone && sc.tail.cuttable() != tc.cuttable) {
			t.Errorf("%s: valid end %d, tail %s (cuttable %v: %s); want %d, %s (cuttable %v)",
				tc.name, sc.validEndBytes, sc.tail.kind, sc.tail.cuttable(), sc.tail.reason, tc.validEnd, tc.kind, tc.cuttable)
			continue
		}
		if tc.kind == tailStray && sc.tail.firstNonZero != int64(tc.firstNonZero) {
			t.Errorf("%s: first non-zero byte at %d, want %d", tc.name, sc.tail.firstNonZero, tc.firstNonZero)
		}
		if tc.kind != tailNone && !tc.cuttable {
			var ce *CorruptError
			if err := sc.tail.refusal("wal/x.wal", true); !errors.As(err, &ce) || ce.File != "wal/x.wal" {
				t.Errorf("%s: refusal %v, want a CorruptError naming the file", tc.name, err)
			} else if tc.kind == tailStray && ce.OffsetBytes != int64(tc.firstNonZero) {
				t.Errorf("%s: refusal names offset %d, the first damaged byte is at %d: %v", tc.name, ce.OffsetBytes, tc.firstNonZero, err)
			}
		}
	}
}

// TestReadSegmentFindsDataEnd: readSegment finds the last non-zero byte
// wherever it falls against its chunks and blocks, and reads nothing of an
// all-zero file.
func TestReadSegmentFindsDataEnd(t *testing.T) {
	sizeBytes := int64(2*zeroScanChunkBytes + 3*len(zeroBlock) + 17)
	for _, last := range []int64{-1, 0, 1, int64(len(zeroBlock)) - 1, int64(len(zeroBlock)), zeroScanChunkBytes - 1, zeroScanChunkBytes,
		zeroScanChunkBytes + 1, sizeBytes - zeroScanChunkBytes, sizeBytes - 2, sizeBytes - 1} {
		fsys := NewSimFS()
		f, err := fsys.Create("s.wal")
		must(t, err)
		must(t, f.Allocate(sizeBytes))
		if last >= 0 {
			_, err = f.WriteAt([]byte{0x80}, last)
			must(t, err)
		}
		if last > 0 {
			_, err = f.WriteAt([]byte{7}, last/2) // a non-zero byte before it, to check it is read too
			must(t, err)
		}
		data, gotSizeBytes, err := readSegment(fsys, "s.wal")
		must(t, err)
		if gotSizeBytes != sizeBytes || int64(len(data)) != last+1 {
			t.Fatalf("last non-zero byte at %d: read %d bytes of %d, want %d of %d", last, len(data), gotSizeBytes, last+1, sizeBytes)
		}
		if last >= 0 && (data[last] != 0x80 || (last > 0 && data[last/2] != 7)) {
			t.Fatalf("last non-zero byte at %d: the data read differs from the file", last)
		}
	}
}

func flip(b []byte, byteOffset int) []byte {
	c := bytes.Clone(b)
	c[byteOffset] ^= 0x04
	return c
}

// TestRecordCRCMatchesReference: recordCRC, which feeds the 4 seed bytes
// through the table by hand, equals CRC-32C over the seed bytes, header and
// body computed by crc32 itself.
func TestRecordCRCMatchesReference(t *testing.T) {
	rng := newRand(1)
	header := make([]byte, recordHeaderSizeBytes)
	body := make([]byte, 300)
	seeds := []uint32{0, 1, 0xff, 0x100, 0xE5, 0x80000000, 0xffffffff, 0xdeadbeef}
	for range 1000 {
		seeds = append(seeds, rng.Uint32())
	}
	for i, prev := range seeds {
		for j := range header {
			header[j] = byte(rng.Uint32())
		}
		b := body[:i%len(body)]
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		want := crc32.Checksum(binary.LittleEndian.AppendUint32(nil, prev), castagnoli)
		want = crc32.Update(want, castagnoli, header[:24])
		want = crc32.Update(want, castagnoli, b)
		if got := recordCRC(prev, header, b); got != want {
			t.Fatalf("recordCRC(%08x, ...) = %08x, want %08x", prev, got, want)
		}
	}
}

// TestRecordCodecDoesNotAllocate: encoding into a buffer with room and
// decoding allocate nothing (DecodeRecord promises it; the WAL appends and
// replays every record through them).
func TestRecordCodecDoesNotAllocate(t *testing.T) {
	rec := Record{Type: RecordEntry, Index: 1 << 40, Term: 1 << 20, Body: bytes.Repeat([]byte("x"), 1000)}
	buf := make([]byte, 0, EncodedSizeBytes(len(rec.Body)))
	if n := testing.AllocsPerRun(100, func() { buf, _ = AppendRecord(buf[:0], rec, 0xdeadbeef) }); n != 0 {
		t.Errorf("AppendRecord into a preallocated buffer: %v allocations, want 0", n)
	}
	encoded, _ := AppendRecord(nil, rec, 0xdeadbeef)
	if n := testing.AllocsPerRun(100, func() {
		if _, _, _, err := DecodeRecord(encoded, 0xdeadbeef); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("DecodeRecord: %v allocations, want 0", n)
	}
}

package disk

import (
	"bytes"
	"errors"
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

// TestScanSegmentTornVersusCorrupt pins the tail rule: cut only what has the
// shape of a torn write (ends inside a record, or a damaged record followed
// only by zeros); refuse a damaged whole record even at the very end.
func TestScanSegmentTornVersusCorrupt(t *testing.T) {
	s := &Storage{metadata: []byte("m")}
	seg, crc := s.encodeHead(nil, segmentInfo{seq: 0, firstIndex: 1}, 0)
	headEnd := len(seg)
	seg, crc = AppendRecord(seg, Record{Type: RecordEntry, Index: 1, Term: 1, Body: mustMarshal(ent(1, 1, "one"))}, crc)
	oneEnd := len(seg)
	seg, _ = AppendRecord(seg, Record{Type: RecordEntry, Index: 2, Term: 1, Body: mustMarshal(ent(2, 1, "two"))}, crc)
	for _, tc := range []struct {
		name     string
		data     []byte
		validEnd int
		corrupt  bool
	}{
		{"whole", seg, len(seg), false},
		{"cut in last body", seg[:len(seg)-5], oneEnd, false},
		{"cut in last header", seg[:oneEnd+20], oneEnd, false},
		{"last zeroed from mid-body", append(bytes.Clone(seg[:oneEnd+40]), make([]byte, len(seg)-oneEnd-40+100)...), oneEnd, false},
		{"last header zeroed", append(bytes.Clone(seg[:oneEnd+5]), make([]byte, 300)...), oneEnd, false},
		{"bit flip in last record", flip(seg, oneEnd+35), 0, true},
		{"bit flip in last length", flip(seg, oneEnd+1), 0, true},
		{"bit flip in middle", flip(seg, headEnd+35), 0, true},
		{"zeros then data", append(append(bytes.Clone(seg[:oneEnd]), make([]byte, 64)...), seg[oneEnd:]...), 0, true},
	} {
		sc, err := scanSegment("wal/x.wal", tc.data, true)
		if tc.corrupt {
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.File != "wal/x.wal" {
				t.Errorf("%s: %v, want a CorruptError naming the file", tc.name, err)
			}
			continue
		}
		if err != nil || sc.validEndBytes != int64(tc.validEnd) {
			t.Errorf("%s: valid end %d err %v, want %d", tc.name, sc.validEndBytes, err, tc.validEnd)
		}
	}
	// A torn tail in an older segment is corruption: it was synced whole.
	if _, err := scanSegment("wal/x.wal", seg[:len(seg)-5], false); !errors.Is(err, ErrCorrupt) {
		t.Errorf("torn older segment: %v", err)
	}
}

func flip(b []byte, byteOffset int) []byte {
	c := bytes.Clone(b)
	c[byteOffset] ^= 0x04
	return c
}

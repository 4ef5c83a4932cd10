package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Record framing. Every record in a WAL segment is
//
//	offset  size  field
//	0       4     bodySizeBytes (little-endian uint32, at most RecordBodyBytesMax)
//	4       1     type (RecordType, never 0)
//	5       3     zero
//	8       8     index (raft index the record speaks of; see RecordType)
//	16      8     term
//	24      4     recordCRC: CRC-32C of prevRecordCRC (4 bytes LE), bytes 0..24
//	              of this header, and the body
//	28      4     headerCRC: CRC-32C of bytes 0..28 (so it also covers recordCRC)
//	32      n     body
//	32+n    1     end marker 0xE5
//
// Why each part:
//   - recordCRC covers type, index and term as well as the body, and is
//     chained: it is seeded with the previous record's recordCRC. A record
//     is therefore valid only right after the record it was written after.
//     A misdirected write, a stale record left from an older incarnation of
//     the file, a swapped or missing segment all break the chain (binding to
//     the index alone would accept a stale record that carries a plausible
//     index). Segment headers carry the chain across files.
//   - headerCRC lets the length be trusted before the body is read: a flipped
//     length bit is caught as corruption instead of looking like a record
//     that runs past the end of the file (a torn tail), so a synced record is
//     never cut because its length field was damaged, and no allocation or
//     read is ever sized by an unverified length.
//   - The end marker is never zero, so a whole record always ends in a
//     non-zero byte. A record whose trailing bytes are zero up to the end of
//     the file can only be a torn write over zeros (preallocated or extended
//     space), not a damaged whole record; see scanSegment.
const (
	recordHeaderSizeBytes  = 32
	recordTrailerSizeBytes = 1
	recordEndMarker        = 0xE5
	// RecordBodyBytesMax bounds one record's body; Append refuses larger
	// entries and the decoder refuses larger lengths.
	RecordBodyBytesMax = 64 << 20
)

// RecordType says what a record holds.
type RecordType uint8

const (
	// RecordSegmentHeader opens every segment. Index is the first raft index
	// the segment may hold (the log's last index + 1 when it was started),
	// Term the term of the entry before it; the body is segmentHeader.
	RecordSegmentHeader RecordType = 1
	// RecordMetadata holds the opaque metadata given to Create.
	RecordMetadata RecordType = 2
	// RecordEntry holds a raftpb.Entry; Index and Term are the entry's.
	RecordEntry RecordType = 3
	// RecordHardState holds a raftpb.HardState; Index is its commit, Term its term.
	RecordHardState RecordType = 4
	// RecordSnapshot marks a durable snapshot file; Index and Term are the
	// snapshot's, the body is snapshotMarker.
	RecordSnapshot RecordType = 5
)

func (t RecordType) String() string {
	switch t {
	case RecordSegmentHeader:
		return "segment-header"
	case RecordMetadata:
		return "metadata"
	case RecordEntry:
		return "entry"
	case RecordHardState:
		return "hard-state"
	case RecordSnapshot:
		return "snapshot"
	}
	return fmt.Sprintf("RecordType(%d)", uint8(t))
}

func (t RecordType) valid() bool { return t >= RecordSegmentHeader && t <= RecordSnapshot }

// Record is one decoded WAL record. Body aliases the buffer it was decoded from.
type Record struct {
	Type  RecordType
	Index uint64
	Term  uint64
	Body  []byte
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordCRC computes the chained checksum of a record: CRC-32C of prevCRC
// (4 bytes LE), header[:24] and body.
func recordCRC(prevCRC uint32, header []byte, body []byte) uint32 {
	crc := crc32Seed(prevCRC)
	crc = crc32.Update(crc, castagnoli, header[:24])
	return crc32.Update(crc, castagnoli, body)
}

// crc32Seed returns crc32.Update(0, castagnoli, prevCRC as 4 bytes LE),
// worked through the table a byte at a time as crc32's own simpleUpdate
// does: a slice of the 4 bytes handed to crc32.Update would escape (it is
// passed on through a function value) and cost an allocation per record.
func crc32Seed(prevCRC uint32) uint32 {
	crc := ^uint32(0)
	for i := range 4 {
		crc = castagnoli[byte(crc)^byte(prevCRC>>(8*i))] ^ (crc >> 8)
	}
	return ^crc
}

// EncodedSizeBytes returns how many bytes a record with a body of n bytes takes.
func EncodedSizeBytes(bodySizeBytes int) int {
	return recordHeaderSizeBytes + bodySizeBytes + recordTrailerSizeBytes
}

// AppendRecord appends the encoding of rec, chained after a record whose
// checksum was prevCRC, to dst. It returns the extended buffer and rec's
// checksum, which chains the next record.
func AppendRecord(dst []byte, rec Record, prevCRC uint32) ([]byte, uint32) {
	// Checked before assertf is called: its arguments would be boxed (and
	// allocated) on every record even when the check passes.
	if !rec.Type.valid() {
		assertf(false, "append record of type %d", rec.Type)
	}
	if len(rec.Body) > RecordBodyBytesMax {
		assertf(false, "record body of %d bytes exceeds %d", len(rec.Body), RecordBodyBytesMax)
	}
	start := len(dst)
	dst = append(dst, make([]byte, recordHeaderSizeBytes)...)
	h := dst[start:]
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(rec.Body)))
	h[4] = byte(rec.Type)
	binary.LittleEndian.PutUint64(h[8:16], rec.Index)
	binary.LittleEndian.PutUint64(h[16:24], rec.Term)
	crc := recordCRC(prevCRC, h, rec.Body)
	binary.LittleEndian.PutUint32(h[24:28], crc)
	binary.LittleEndian.PutUint32(h[28:32], crc32.Checksum(h[:28], castagnoli))
	dst = append(dst, rec.Body...)
	dst = append(dst, recordEndMarker)
	return dst, crc
}

// Damage kinds a decoder can report.
var (
	// ErrRecordIncomplete: the buffer ends inside the record (a torn write,
	// if it is at the end of the newest segment).
	ErrRecordIncomplete = errors.New("record incomplete")
	// ErrRecordHeaderCorrupt: the header fails its checksum or holds
	// impossible values.
	ErrRecordHeaderCorrupt = errors.New("record header corrupt")
	// ErrRecordCorrupt: the header is sound but the body fails the chained
	// checksum (damaged, misplaced, or not chained to the record before it)
	// or the end marker is wrong.
	ErrRecordCorrupt = errors.New("record corrupt")
)

// DecodeRecord decodes the record at the start of buf, expected to follow a
// record whose checksum was prevCRC. It returns the record (its Body aliases
// buf), its encoded size, and its checksum. It never allocates; every error
// wraps one of ErrRecordIncomplete, ErrRecordHeaderCorrupt, ErrRecordCorrupt.
func DecodeRecord(buf []byte, prevCRC uint32) (rec Record, sizeBytes int, crc uint32, err error) {
	if len(buf) < recordHeaderSizeBytes {
		return Record{}, 0, 0, fmt.Errorf("%w: %d bytes left, header needs %d", ErrRecordIncomplete, len(buf), recordHeaderSizeBytes)
	}
	h := buf[:recordHeaderSizeBytes]
	if got, want := crc32.Checksum(h[:28], castagnoli), binary.LittleEndian.Uint32(h[28:32]); got != want {
		return Record{}, 0, 0, fmt.Errorf("%w: header checksum %08x, stored %08x", ErrRecordHeaderCorrupt, got, want)
	}
	bodySizeBytes := binary.LittleEndian.Uint32(h[0:4])
	rec.Type = RecordType(h[4])
	if !rec.Type.valid() {
		return Record{}, 0, 0, fmt.Errorf("%w: unknown type %d", ErrRecordHeaderCorrupt, h[4])
	}
	if h[5] != 0 || h[6] != 0 || h[7] != 0 {
		return Record{}, 0, 0, fmt.Errorf("%w: reserved bytes %x are not zero", ErrRecordHeaderCorrupt, h[5:8])
	}
	if bodySizeBytes > RecordBodyBytesMax {
		return Record{}, 0, 0, fmt.Errorf("%w: body of %d bytes exceeds %d", ErrRecordHeaderCorrupt, bodySizeBytes, RecordBodyBytesMax)
	}
	rec.Index = binary.LittleEndian.Uint64(h[8:16])
	rec.Term = binary.LittleEndian.Uint64(h[16:24])
	sizeBytes = EncodedSizeBytes(int(bodySizeBytes))
	if len(buf) < sizeBytes {
		return Record{}, 0, 0, fmt.Errorf("%w: %s record of %d bytes, %d bytes left", ErrRecordIncomplete, rec.Type, sizeBytes, len(buf))
	}
	rec.Body = buf[recordHeaderSizeBytes : recordHeaderSizeBytes+int(bodySizeBytes) : recordHeaderSizeBytes+int(bodySizeBytes)]
	crc = recordCRC(prevCRC, h, rec.Body)
	if stored := binary.LittleEndian.Uint32(h[24:28]); crc != stored {
		return Record{}, 0, 0, fmt.Errorf("%w: %s record index %d term %d: checksum %08x, stored %08x (damaged, or not chained to the record before it)",
			ErrRecordCorrupt, rec.Type, rec.Index, rec.Term, crc, stored)
	}
	if marker := buf[sizeBytes-1]; marker != recordEndMarker {
		return Record{}, 0, 0, fmt.Errorf("%w: end marker %#x, want %#x", ErrRecordCorrupt, marker, recordEndMarker)
	}
	return rec, sizeBytes, crc, nil
}

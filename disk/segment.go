package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path"
	"strconv"
	"strings"
)

// A WAL directory holds segment files named <seq>-<firstIndex>.wal, both
// 16 hex digits: seq counts segments from 0 with no gaps among those
// retained; firstIndex is the first raft index the segment may hold. Each
// segment opens with its head: a segment-header record, the metadata, the
// newest snapshot marker and the newest hard state known when it was
// started, so that older segments can be released without losing any of
// them.

const (
	segmentSuffix = ".wal"
	// walFormatVersion is written in every segment header.
	walFormatVersion = 1
	// segmentHeaderBodySizeBytes: seq u64, prevSegmentCRC u32, headRecords u8,
	// version u8, 2 zero bytes.
	segmentHeaderBodySizeBytes = 16
	// segmentsMax bounds how many segments Open reads.
	segmentsMax = 1 << 20
)

func segmentName(seq, firstIndex uint64) string { return hexPairName(seq, firstIndex, segmentSuffix) }

// hexPairName is the shape of segment and snapshot file names: two numbers
// in 16 hex digits each, a dash between, then the suffix. Fixed width makes
// name order number order.
func hexPairName(a, b uint64, suffix string) string {
	return fmt.Sprintf("%016x-%016x%s", a, b, suffix)
}

func parseHexPairName(name, suffix string) (a, b uint64, ok bool) {
	base, found := strings.CutSuffix(name, suffix)
	if !found || len(base) != 33 || base[16] != '-' {
		return 0, 0, false
	}
	a, err1 := strconv.ParseUint(base[:16], 16, 64)
	b, err2 := strconv.ParseUint(base[17:], 16, 64)
	return a, b, err1 == nil && err2 == nil
}

type segmentHeader struct {
	seq            uint64
	prevSegmentCRC uint32 // recordCRC of the last record of segment seq-1 (0 for seq 0)
	headRecords    int    // records in the head, this header included
}

func (h segmentHeader) encode() []byte {
	b := make([]byte, segmentHeaderBodySizeBytes)
	binary.LittleEndian.PutUint64(b[0:8], h.seq)
	binary.LittleEndian.PutUint32(b[8:12], h.prevSegmentCRC)
	b[12] = byte(h.headRecords)
	b[13] = walFormatVersion
	return b
}

func decodeSegmentHeader(body []byte) (segmentHeader, error) {
	if len(body) != segmentHeaderBodySizeBytes {
		return segmentHeader{}, fmt.Errorf("segment header body is %d bytes, want %d", len(body), segmentHeaderBodySizeBytes)
	}
	if body[13] != walFormatVersion {
		return segmentHeader{}, fmt.Errorf("WAL format version %d, this build reads %d", body[13], walFormatVersion)
	}
	if body[14] != 0 || body[15] != 0 {
		return segmentHeader{}, errors.New("segment header reserved bytes are not zero")
	}
	h := segmentHeader{
		seq:            binary.LittleEndian.Uint64(body[0:8]),
		prevSegmentCRC: binary.LittleEndian.Uint32(body[8:12]),
		headRecords:    int(body[12]),
	}
	if h.headRecords < 2 || h.headRecords > 4 {
		return segmentHeader{}, fmt.Errorf("segment head of %d records, want 2 to 4", h.headRecords)
	}
	return h, nil
}

// CorruptError reports damage that Open refuses to repair: the member must
// not start on it. It names the file and the offset of the damaged record,
// or of the first damaged byte where that is known exactly (stray bytes
// after the last record; Err then gives the range).
type CorruptError struct {
	File        string
	OffsetBytes int64
	// What is at the offset: "record" (when empty) or "data".
	What string
	Err  error
}

// ErrCorrupt matches every *CorruptError under errors.Is.
var ErrCorrupt = errors.New("disk: corrupt")

func (e *CorruptError) Error() string {
	what := e.What
	if what == "" {
		what = "record"
	}
	return fmt.Sprintf("disk: corrupt %s in %s at offset %d: %v", what, e.File, e.OffsetBytes, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// scannedRecord is a record with where it was found.
type scannedRecord struct {
	Record
	offsetBytes int64
}

// segmentScan is what scanSegment found in one segment file.
type segmentScan struct {
	header  segmentHeader
	first   Record // the segment-header record
	records []scannedRecord
	// validEndBytes is where the last whole record ends; tail says what
	// follows it up to the last non-zero byte; after that, zeros.
	validEndBytes int64
	endCRC        uint32 // recordCRC of the last whole record (0 before the first): the next chains to it
	tail          segmentTail
	// headComplete is false if the file ends (torn or not) inside its head.
	headComplete bool
}

// scanSegment decodes the records of one segment. data is the segment up to
// its last non-zero byte (readSegment): the rest of the file is zeros, the
// allocated space after the last record, which is the normal end of a
// segment's data and never damage. Whatever follows the last whole record
// is classified in sc.tail, for Open to judge (it may cut a tail only from
// the newest segment, and pass one over in an older segment only when the
// next segment's header proves the log continues from the record before
// it).
//
// A torn tail is recognised by its shape only, never by a checksum failure
// of a whole record, because Open cannot know which bytes were synced:
//   - the data ends inside a record: the file ends there, or only zeros
//     follow (a record whose header is incomplete, or whose verified header
//     claims more bytes than are left before the zeros; a record's end
//     marker is never zero, so a record written whole never ends in the
//     zeros); or
//   - a damaged header is the last non-zero data: a header torn over zeros.
//
// Stray bytes are the other shape a tail may have: nothing written where
// the next record would start (its type byte and both checksums read zero,
// which no record header has), non-zero bytes further on.
//
// Anything else that fails (a damaged whole record, whatever follows it) is
// corruption (tailCorrupt). So a flipped bit in the last record is refused
// even if that record had never been synced: refusing unsynced garbage
// costs a manual repair, cutting a synced record would lose an
// acknowledged write.
//
// Damage inside the data that decodes (a segment header in the middle, a
// head out of order) is returned as a *CorruptError.
func scanSegment(name string, data []byte) (segmentScan, error) {
	var sc segmentScan
	corrupt := func(off int64, format string, args ...any) error {
		return &CorruptError{File: name, OffsetBytes: off, Err: fmt.Errorf(format, args...)}
	}
	assertf(len(data) == 0 || data[len(data)-1] != 0, "scan of %s given data that ends in zeros", name)
	off := 0
	for recordsRead := 0; off < len(data); recordsRead++ {
		assertf(recordsRead <= len(data)/EncodedSizeBytes(0), "more records than bytes allow in %s", name)
		rec, n, crc, err := DecodeRecord(data[off:], sc.endCRC)
		if err != nil {
			sc.tail = classifyTail(name, data, off, err)
			break
		}
		if off == 0 {
			if rec.Type != RecordSegmentHeader {
				return sc, corrupt(0, "first record is %s, want %s", rec.Type, RecordSegmentHeader)
			}
			h, err := decodeSegmentHeader(rec.Body)
			if err != nil {
				return sc, corrupt(0, "%v", err)
			}
			sc.header, sc.first = h, rec
		} else {
			if rec.Type == RecordSegmentHeader {
				return sc, corrupt(int64(off), "segment header in the middle of a segment")
			}
			if recordsRead == 1 && rec.Type != RecordMetadata {
				return sc, corrupt(int64(off), "second record is %s, want %s", rec.Type, RecordMetadata)
			}
			sc.records = append(sc.records, scannedRecord{Record: rec, offsetBytes: int64(off)})
		}
		off += n
		sc.validEndBytes = int64(off)
		sc.endCRC = crc
	}
	sc.headComplete = sc.validEndBytes > 0 && sc.header.headRecords > 0 && 1+len(sc.records) >= sc.header.headRecords
	return sc, nil
}

// classifyTail says what the bytes from off (where the last whole record
// ends) to the end of data are, given the error decoding them gave.
func classifyTail(name string, data []byte, off int, decodeErr error) segmentTail {
	rest := data[off:]
	t := segmentTail{recordsEnd: int64(off), dataEnd: int64(len(data)),
		firstNonZero: int64(off + firstNonZeroIndex(rest)), endsInMarker: data[len(data)-1] == recordEndMarker, headerAt: -1}
	switch {
	case len(rest) > 4 && nothingWrittenAt(rest):
		t.kind = tailStray
		if i := soundHeaderIndex(data[t.firstNonZero:]); i >= 0 {
			t.headerAt = t.firstNonZero + int64(i)
		}
	case errors.Is(decodeErr, ErrRecordIncomplete):
		t.kind, t.reason = tailTorn, fmt.Sprintf("the data ends inside a record, at the end of the file or before zeros to it (%v)", decodeErr)
	case errors.Is(decodeErr, ErrRecordHeaderCorrupt) && len(rest) <= recordHeaderSizeBytes:
		t.kind, t.reason = tailTorn, fmt.Sprintf("a damaged header followed by zeros to the end (%v)", decodeErr)
	default:
		t.kind, t.reason = tailCorrupt, decodeErr.Error()
		t.err = &CorruptError{File: name, OffsetBytes: int64(off), Err: decodeErr}
		if where := whereDamaged(rest, off, decodeErr); where != "" {
			t.err = &CorruptError{File: name, OffsetBytes: int64(off), Err: fmt.Errorf("%w; %s", decodeErr, where)}
		}
	}
	return t
}

// nothingWrittenAt reports whether no record header starts at b: its type
// byte and both checksums (as far as b reaches) are zero, which no header
// ever written is (its type is never zero; a header torn short keeps its
// first bytes, type included once it has more than four).
func nothingWrittenAt(b []byte) bool {
	if b[4] != 0 {
		return false
	}
	end := min(len(b), recordHeaderSizeBytes)
	for i := 24; i < end; i++ {
		if b[i] != 0 {
			return false
		}
	}
	return true
}

// whereDamaged narrows where a whole record that fails to decode is
// damaged, as far as its checks can tell, in offsets of the file (the
// record starts at recordOffset): a header that fails its own checksum is
// damaged in its 32 bytes; a wrong end marker is that one byte; a sound
// header whose record fails the chained checksum has a damaged body, or is
// not the record that belongs here. It returns "" when the error says
// nothing more.
func whereDamaged(rec []byte, recordOffset int, decodeErr error) string {
	switch {
	case errors.Is(decodeErr, ErrRecordHeaderCorrupt):
		return fmt.Sprintf("the damage is within the record's header, offsets %d to %d", recordOffset, recordOffset+recordHeaderSizeBytes-1)
	case errors.Is(decodeErr, ErrRecordCorrupt) && len(rec) >= recordHeaderSizeBytes:
		size := EncodedSizeBytes(int(binary.LittleEndian.Uint32(rec[0:4])))
		switch {
		case size <= len(rec) && rec[size-1] != recordEndMarker:
			return fmt.Sprintf("the damaged byte is the record's end marker at offset %d", recordOffset+size-1)
		case size > recordHeaderSizeBytes+recordTrailerSizeBytes:
			return fmt.Sprintf("the damage is within the record's body, offsets %d to %d, or the record is not the one that belongs here",
				recordOffset+recordHeaderSizeBytes, recordOffset+size-2)
		}
		return "the record (with an empty body) is not the one that belongs here"
	}
	return ""
}

// soundHeaderIndex returns the first position in b where a record header
// that passes its own checksum starts, or -1. Checking the type and
// reserved bytes first keeps the scan to a byte compare at most positions.
func soundHeaderIndex(b []byte) int {
	for i := 0; i+recordHeaderSizeBytes <= len(b); i++ {
		h := b[i : i+recordHeaderSizeBytes]
		if !RecordType(h[4]).valid() || h[5] != 0 || h[6] != 0 || h[7] != 0 {
			continue
		}
		if crc32.Checksum(h[:28], castagnoli) == binary.LittleEndian.Uint32(h[28:32]) {
			return i
		}
	}
	return -1
}

// firstNonZeroIndex returns the index of b's first non-zero byte, or len(b).
func firstNonZeroIndex(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return len(b)
}

// zeroScanChunkBytes is how much of a segment's tail readSegment reads at a
// time while it looks for the end of the data.
const zeroScanChunkBytes = 1 << 20

// zeroBlock is compared against to find non-zero bytes a block at a time.
var zeroBlock [4096]byte

// readSegment reads a segment up to its last non-zero byte and returns that
// with the file's size. The rest is zeros: allocated space after the last
// record (or a torn write's zeroed blocks), in which no whole record can
// end, so it is read in chunks from the end and checked, never held: a
// preallocated segment costs memory for its data only.
func readSegment(fsys FS, name string) (data []byte, fileSizeBytes int64, err error) {
	f, fileSizeBytes, err := openSized(fsys, name, fileSizeBytesMax)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	chunk := make([]byte, min(zeroScanChunkBytes, fileSizeBytes))
	dataEnd := fileSizeBytes
	for dataEnd > 0 {
		start := max(0, dataEnd-int64(len(chunk)))
		part := chunk[:dataEnd-start]
		if err := readFullAt(f, part, start); err != nil {
			return nil, 0, fmt.Errorf("disk: read %s: %w", name, err)
		}
		if i := lastNonZeroIndex(part); i >= 0 {
			data = make([]byte, start+int64(i)+1)
			copy(data[start:], part[:i+1])
			if err := readFullAt(f, data[:start], 0); err != nil {
				return nil, 0, fmt.Errorf("disk: read %s: %w", name, err)
			}
			return data, fileSizeBytes, nil
		}
		dataEnd = start // each pass moves dataEnd down by a whole chunk: bounded by the size
	}
	return nil, fileSizeBytes, nil
}

// lastNonZeroIndex returns the index of b's last non-zero byte, or -1.
func lastNonZeroIndex(b []byte) int {
	end := len(b)
	for end > 0 { // each pass moves end down by a block
		start := max(0, end-len(zeroBlock))
		if !bytes.Equal(b[start:end], zeroBlock[:end-start]) {
			for i := end - 1; i >= start; i-- {
				if b[i] != 0 {
					return i
				}
			}
		}
		end = start
	}
	return -1
}

// segmentInfo is a retained segment.
type segmentInfo struct {
	seq        uint64
	firstIndex uint64
	name       string // full name: walDir/<seq>-<firstIndex>.wal
}

// listSegments returns the segments of walDir sorted by seq, and the
// leftover temporary files there.
func listSegments(fsys FS, walDir string) (segs []segmentInfo, tmps []string, err error) {
	// Names are fixed-width hex, so List's sorted order is seq order.
	return listHexPairFiles(fsys, walDir, segmentSuffix, segmentsMax, func(seq, first uint64, name string) segmentInfo {
		return segmentInfo{seq: seq, firstIndex: first, name: name}
	})
}

// listHexPairFiles returns the files of dir named by hexPairName with
// suffix, in List's sorted order (number order), each made by mk from the
// two numbers and its full name, and the leftover temporary files there.
// Other names are skipped. A directory of more than filesMax entries is
// refused.
func listHexPairFiles[T any](fsys FS, dir, suffix string, filesMax int, mk func(a, b uint64, name string) T) (files []T, tmps []string, err error) {
	names, err := fsys.List(dir)
	if err != nil {
		return nil, nil, err
	}
	if len(names) > filesMax {
		return nil, nil, fmt.Errorf("disk: %s holds %d files, more than %d", dir, len(names), filesMax)
	}
	for _, n := range names {
		if strings.HasSuffix(n, tmpSuffix) {
			tmps = append(tmps, path.Join(dir, n))
			continue
		}
		if a, b, ok := parseHexPairName(n, suffix); ok {
			files = append(files, mk(a, b, path.Join(dir, n)))
		}
	}
	return files, tmps, nil
}

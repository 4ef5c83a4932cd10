package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
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

func parseSegmentName(name string) (seq, firstIndex uint64, ok bool) {
	return parseHexPairName(name, segmentSuffix)
}

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
// not start on it. It names the file and the offset of the damaged record.
type CorruptError struct {
	File        string
	OffsetBytes int64
	Err         error
}

// ErrCorrupt matches every *CorruptError under errors.Is.
var ErrCorrupt = errors.New("disk: corrupt")

func (e *CorruptError) Error() string {
	return fmt.Sprintf("disk: corrupt record in %s at offset %d: %v", e.File, e.OffsetBytes, e.Err)
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
	// validEndBytes is where the last whole record ends; bytes after it are
	// a torn tail (only ever accepted in the newest segment).
	validEndBytes int64
	endCRC        uint32 // recordCRC of the last whole record
	// tornReason says why the bytes after validEndBytes were judged a torn
	// write; empty if the file ends exactly at validEndBytes.
	tornReason string
	// headComplete is false if the file ends (torn or not) inside its head.
	headComplete bool
}

// scanSegment decodes the records of one segment. newest says whether this
// is the newest segment, the only one where a torn tail may be cut.
//
// A torn tail is recognised by its shape only, never by a checksum failure
// of a whole record, because Open cannot know which bytes were synced:
//   - the file ends inside a record (header incomplete, or a verified header
//     whose body runs past the end of the file); or
//   - a record is damaged and every byte from its end marker (for a damaged
//     header: from the end of its header) to the end of the file is zero:
//     a write torn over zeroed space.
//
// Anything else that fails (a damaged whole record, whatever follows it) is
// corruption and refused with a *CorruptError. So a flipped bit in the last
// record is refused even if that record had never been synced: refusing
// unsynced garbage costs a manual repair, cutting a synced record would lose
// an acknowledged write.
func scanSegment(name string, data []byte, newest bool) (segmentScan, error) {
	var sc segmentScan
	corrupt := func(off int64, format string, args ...any) error {
		return &CorruptError{File: name, OffsetBytes: off, Err: fmt.Errorf(format, args...)}
	}
	lastNonZero := -2 // computed on first need; -1 means all zero
	lastNonZeroOffset := func() int {
		if lastNonZero == -2 {
			lastNonZero = -1
			for i := len(data) - 1; i >= 0; i-- {
				if data[i] != 0 {
					lastNonZero = i
					break
				}
			}
		}
		return lastNonZero
	}
	var chain uint32
	off := 0
	for recordsRead := 0; off < len(data); recordsRead++ {
		assertf(recordsRead <= len(data)/EncodedSizeBytes(0), "more records than bytes allow in %s", name)
		rec, n, crc, err := DecodeRecord(data[off:], chain)
		if err != nil {
			torn := ""
			switch {
			case errors.Is(err, ErrRecordIncomplete):
				torn = "the file ends inside a record"
			case errors.Is(err, ErrRecordHeaderCorrupt) && lastNonZeroOffset() < off+recordHeaderSizeBytes:
				torn = "a damaged header followed by zeros to the end"
			case errors.Is(err, ErrRecordCorrupt) && lastNonZeroOffset() < off+recordSizeFromHeader(data[off:])-1:
				torn = "a damaged record whose end is zeros to the end"
			}
			if torn == "" {
				return sc, corrupt(int64(off), "%v", err)
			}
			if !newest {
				return sc, corrupt(int64(off), "%v: a torn record, but not in the newest segment (older segments were synced whole)", err)
			}
			sc.tornReason = fmt.Sprintf("%s (%v)", torn, err)
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
		chain = crc
		off += n
		sc.validEndBytes = int64(off)
		sc.endCRC = crc
	}
	sc.headComplete = off > 0 && sc.header.headRecords > 0 && 1+len(sc.records) >= sc.header.headRecords
	return sc, nil
}

// recordSizeFromHeader returns the size a record's verified header claims.
// It is only called after DecodeRecord found the header sound and the whole
// record present.
func recordSizeFromHeader(b []byte) int {
	return EncodedSizeBytes(int(binary.LittleEndian.Uint32(b[0:4])))
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
	names, err := fsys.List(walDir)
	if err != nil {
		return nil, nil, err
	}
	if len(names) > segmentsMax {
		return nil, nil, fmt.Errorf("disk: %s holds %d files, more than %d", walDir, len(names), segmentsMax)
	}
	for _, n := range names {
		if strings.HasSuffix(n, tmpSuffix) {
			tmps = append(tmps, path.Join(walDir, n))
			continue
		}
		seq, first, ok := parseSegmentName(n)
		if !ok {
			continue
		}
		segs = append(segs, segmentInfo{seq: seq, firstIndex: first, name: path.Join(walDir, n)})
	}
	// Names are fixed-width hex, so List's sorted order is seq order.
	return segs, tmps, nil
}

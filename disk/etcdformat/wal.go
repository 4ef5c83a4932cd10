package etcdformat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path"
	"strconv"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/disk"
)

// etcd's WAL, as its files hold it. A directory of files named
// <seq>-<index>.wal (16 hex digits each; index is the raft index the file's
// first entry may have), each preallocated and filled from the front with
// frames:
//
//	8 bytes little-endian: the record's length in the low 56 bits; if the
//	top bit is set, bits 56..58 count padding bytes after the record
//	the record (walpb.Record: type 1, crc 2, data 3), then the padding
//
// A frame of length 0 (the preallocated zeros) ends a file's data. Every
// record but a CRC record carries the CRC-32C of its data chained from the
// record before: crc = crc32.Update(previous crc, Castagnoli, data). A file
// opens with a CRC record holding the chain's value at the end of the file
// before, then a metadata record (etcdserverpb.Metadata: member and cluster
// ID, the same in every file), then, in all but the first, the hard state.
// Record types: 1 metadata, 2 entry (raftpb.Entry), 3 hard state
// (raftpb.HardState), 4 CRC, 5 snapshot (walpb.Snapshot: index 1, term 2,
// conf state 3). An entry replaces every entry at or after its index, as
// raft overwrites an uncommitted tail.
const (
	walMetadata = 1
	walEntry    = 2
	walState    = 3
	walCRC      = 4
	walSnapshot = 5

	walSuffix        = ".wal"
	walSectorBytes   = 512
	walFileBytesMax  = 1 << 30 // etcd's files are 64 MiB; a bigger one is refused before it is read
	walFilesMax      = 1 << 16
	walFrameLenBytes = 8
)

// WAL is what ReadWAL found.
type WAL struct {
	NodeID, ClusterID uint64
	HardState         *raftpb.HardState // nil if no state record was read
	// Entries are the entries after the index ReadWAL was given, in
	// order, without gaps, as the log holds them after every overwrite.
	Entries []*raftpb.Entry
	// TermAtStart is the term of the entry at ReadWAL's index, from the
	// entry or a snapshot record there; 0 when the WAL does not say.
	TermAtStart uint64
	// FirstFile is the file reading started from; Files counts those read.
	FirstFile string
	Files     int
	// TornTail is set when the last file ended in a record cut short (a
	// crash while etcd appended it): like etcd, the reader stops there.
	TornTail bool
	// EndCRC is the record chain's checksum after the last record read:
	// any record etcd appends later changes it.
	EndCRC uint32
}

// CorruptError is a WAL that cannot be read: damage, not a torn tail.
type CorruptError struct {
	File        string
	OffsetBytes int64
	Err         error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("etcd WAL %s is corrupt at offset %d: %v", e.File, e.OffsetBytes, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

type walFile struct {
	seq, index uint64
	name       string
}

// listWAL returns dir's WAL files in sequence order.
func listWAL(fsys disk.FS, dir string) ([]walFile, error) {
	names, err := fsys.List(dir)
	if err != nil {
		return nil, err
	}
	if len(names) > walFilesMax {
		return nil, fmt.Errorf("%s holds %d files, more than %d", dir, len(names), walFilesMax)
	}
	var files []walFile
	for _, n := range names {
		base, ok := strings.CutSuffix(n, walSuffix)
		if !ok || len(base) != 33 || base[16] != '-' {
			continue
		}
		seq, err1 := strconv.ParseUint(base[:16], 16, 64)
		index, err2 := strconv.ParseUint(base[17:], 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		files = append(files, walFile{seq: seq, index: index, name: path.Join(dir, n)})
	}
	for i := 1; i < len(files); i++ {
		if files[i].seq != files[i-1].seq+1 {
			return nil, fmt.Errorf("%s: WAL file %d follows file %d: files are missing", dir, files[i].seq, files[i-1].seq)
		}
	}
	return files, nil
}

// HasWAL reports whether dir holds at least one file named as etcd names
// its WAL files.
func HasWAL(fsys disk.FS, dir string) bool {
	files, err := listWAL(fsys, dir)
	return err == nil && len(files) > 0
}

// ReadWAL reads etcd's WAL in dir from the file holding the entry after
// index (the last entry the member applied) to the end, and returns the
// entries after index. It refuses a WAL whose files are missing, whose
// records are damaged (a *CorruptError), whose member or cluster ID
// changes, or that does not reach back to index.
func ReadWAL(fsys disk.FS, dir string, index uint64) (*WAL, error) {
	files, err := listWAL(fsys, dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s holds no WAL files", dir)
	}
	start := -1
	for i := len(files) - 1; i >= 0; i-- {
		if files[i].index <= index {
			start = i
			break
		}
	}
	if start < 0 {
		return nil, fmt.Errorf("%s: the WAL starts at index %d, after the state's index %d: entries in between are gone", dir, files[0].index, index)
	}
	w := &WAL{FirstFile: files[start].name}
	r := &walReader{w: w, from: index}
	for i, f := range files[start:] {
		data, err := readWALFile(fsys, f.name)
		if err != nil {
			return nil, err
		}
		last := start+i == len(files)-1
		if err := r.file(f.name, data, last); err != nil {
			return nil, err
		}
		w.Files++
	}
	w.EndCRC = r.crc
	if !r.haveMetadata {
		return nil, &CorruptError{File: files[start].name, Err: errors.New("no metadata record")}
	}
	return w, nil
}

func readWALFile(fsys disk.FS, name string) ([]byte, error) {
	return disk.ReadFile(fsys, name, walFileBytesMax)
}

type walReader struct {
	w            *WAL
	from         uint64
	crc          uint32
	haveCRC      bool // the chain's value is known (after the first CRC record)
	metadata     []byte
	haveMetadata bool
}

// file decodes one file's records.
func (r *walReader) file(name string, data []byte, last bool) error {
	off := int64(0)
	for {
		if off+walFrameLenBytes > int64(len(data)) {
			if off == int64(len(data)) || allZero(data[off:]) {
				return nil
			}
			return r.tornOr(name, data, off, last, errors.New("frame length cut short"))
		}
		lenField := int64(binary.LittleEndian.Uint64(data[off:]))
		if lenField == 0 {
			// The preallocated space: the end of this file's data.
			return nil
		}
		recBytes := int64(uint64(lenField) &^ (uint64(0xff) << 56))
		padBytes := int64(0)
		if lenField < 0 {
			padBytes = int64((uint64(lenField) >> 56) & 0x7)
		}
		body := off + walFrameLenBytes
		if recBytes > int64(len(data))-body-padBytes {
			return r.tornOr(name, data, off, last, fmt.Errorf("record of %d bytes past the end of the file", recBytes))
		}
		recData := data[body : body+recBytes]
		typ, crc, recBody, err := decodeWALRecord(recData)
		if err != nil {
			return r.tornOr(name, data, off, last, err)
		}
		if typ == walCRC {
			if r.haveCRC && crc != r.crc {
				return &CorruptError{File: name, OffsetBytes: off, Err: fmt.Errorf("CRC record says %08x, the records before end at %08x", crc, r.crc)}
			}
			r.crc, r.haveCRC = crc, true
		} else {
			next := crc32.Update(r.crc, castagnoli, recBody)
			if next != crc {
				return r.tornOr(name, data, off, last, fmt.Errorf("record CRC %08x, computed %08x", crc, next))
			}
			r.crc = next
			if err := r.record(typ, recBody); err != nil {
				return &CorruptError{File: name, OffsetBytes: off, Err: err}
			}
		}
		off = body + recBytes + padBytes
	}
}

// tornOr reports a bad record: at the end of the last file a record that a
// crash cut short (etcd's rule: some 512-byte sector of it is all zeros)
// ends the WAL, as etcd's own reader treats it; anything else is damage.
func (r *walReader) tornOr(name string, data []byte, off int64, last bool, err error) error {
	if last && tornAt(data, off) {
		r.w.TornTail = true
		return nil
	}
	return &CorruptError{File: name, OffsetBytes: off, Err: err}
}

// tornAt reports whether the frame at off was torn: it runs to the end of
// the file or the bytes it spans include a sector-aligned run of zeros.
func tornAt(data []byte, off int64) bool {
	end := int64(len(data))
	if off+walFrameLenBytes <= end {
		lenField := int64(binary.LittleEndian.Uint64(data[off:]))
		recBytes := int64(uint64(lenField) &^ (uint64(0xff) << 56))
		if e := off + walFrameLenBytes + recBytes; e >= off && e < end {
			end = e
		}
	}
	for start := off + walFrameLenBytes; start < end; {
		chunkEnd := min(end, (start/walSectorBytes+1)*walSectorBytes)
		if allZero(data[start:chunkEnd]) {
			return true
		}
		start = chunkEnd
	}
	return end == int64(len(data))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// decodeWALRecord decodes walpb.Record: type (1, varint), crc (2, varint),
// data (3, bytes).
func decodeWALRecord(b []byte) (typ int64, crc uint32, data []byte, err error) {
	err = eachField(b, func(f field) error {
		switch {
		case f.num == 1 && f.typ == protowire.VarintType:
			typ = int64(f.varint)
		case f.num == 2 && f.typ == protowire.VarintType:
			crc = uint32(f.varint)
		case f.num == 3 && f.typ == protowire.BytesType:
			data = f.bytes
		case f.num >= 1 && f.num <= 3:
			return fmt.Errorf("record field %d has wire type %d", f.num, f.typ)
		}
		return nil
	})
	if err != nil {
		return 0, 0, nil, err
	}
	if typ < walMetadata || typ > walSnapshot {
		return 0, 0, nil, fmt.Errorf("record of unknown type %d", typ)
	}
	return typ, crc, data, nil
}

func (r *walReader) record(typ int64, data []byte) error {
	w := r.w
	switch typ {
	case walMetadata:
		if r.haveMetadata && string(r.metadata) != string(data) {
			return errors.New("metadata differs from the file before")
		}
		var md pb.Metadata
		if err := proto.Unmarshal(data, &md); err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		if md.GetNodeID() == 0 || md.GetClusterID() == 0 {
			return fmt.Errorf("metadata names member %x of cluster %x", md.GetNodeID(), md.GetClusterID())
		}
		r.metadata, r.haveMetadata = append([]byte(nil), data...), true
		w.NodeID, w.ClusterID = md.GetNodeID(), md.GetClusterID()
	case walEntry:
		e := &raftpb.Entry{}
		if err := proto.Unmarshal(data, e); err != nil {
			return fmt.Errorf("entry: %w", err)
		}
		idx := e.GetIndex()
		if idx == r.from {
			w.TermAtStart = e.GetTerm()
		}
		if idx <= r.from {
			return nil
		}
		if len(w.Entries) == 0 && idx != r.from+1 {
			return fmt.Errorf("the first entry after index %d has index %d", r.from, idx)
		}
		first := r.from + 1
		if idx > first+uint64(len(w.Entries)) {
			return fmt.Errorf("entry %d follows entry %d: entries are missing", idx, first+uint64(len(w.Entries))-1)
		}
		// An entry replaces the tail from its index on (the entry at from
		// itself was applied, so it is committed and never replaced).
		w.Entries = append(w.Entries[:idx-first], e)
	case walState:
		hs := &raftpb.HardState{}
		if err := proto.Unmarshal(data, hs); err != nil {
			return fmt.Errorf("hard state: %w", err)
		}
		if !isEmptyHardState(hs) {
			w.HardState = hs
		}
	case walSnapshot:
		idx, term, err := decodeWALSnapshot(data)
		if err != nil {
			return err
		}
		if idx == r.from && term != 0 {
			w.TermAtStart = term
		}
	}
	return nil
}

func isEmptyHardState(hs *raftpb.HardState) bool {
	return hs.GetTerm() == 0 && hs.GetVote() == 0 && hs.GetCommit() == 0
}

// decodeWALSnapshot decodes walpb.Snapshot's index (1) and term (2).
func decodeWALSnapshot(b []byte) (index, term uint64, err error) {
	err = eachField(b, func(f field) error {
		switch {
		case f.num == 1 && f.typ == protowire.VarintType:
			index = f.varint
		case f.num == 2 && f.typ == protowire.VarintType:
			term = f.varint
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("snapshot record: %w", err)
	}
	return index, term, nil
}

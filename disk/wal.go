package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Options tunes a Storage. Zero values take the defaults.
type Options struct {
	// SegmentSizeBytes: a segment that has reached this size is closed and a
	// new one started before the next record. Each segment is allocated
	// this size up front (see rollover). Default 64 MiB.
	SegmentSizeBytes int64
	// SnapshotsKept: snapshot files kept after a new one is saved. Default 5.
	// With 2 or more, WAL segments are released only up to the previous
	// snapshot, so Open can fall back to it if the newest file is damaged.
	SnapshotsKept int

	// PlantedCutDamage is a deliberate bug for the simulator's
	// recovered-state check: Open cuts the newest segment back to its last
	// whole record even when what follows is a damaged record (refused
	// otherwise), silently losing what was synced after it. The server
	// never sets it.
	PlantedCutDamage bool

	// planted holds deliberate bugs that tests plant to prove the crash
	// sweep catches them; production code cannot set it.
	planted plantedBugs
}

// plantedBugs are durability steps a test can make Storage skip.
type plantedBugs struct {
	// skipAllocationSync: a new segment's allocation and directory entry
	// are not made durable before records go into it.
	skipAllocationSync bool
}

const (
	// DefaultSegmentSizeBytes is Options.SegmentSizeBytes's default.
	DefaultSegmentSizeBytes = 64 << 20
	// DefaultSnapshotsKept is Options.SnapshotsKept's default.
	DefaultSnapshotsKept = 5
	// writeChunkBytesMax bounds the bytes Storage gathers before handing
	// them to the FS: records reach the FS during Append, never piling up
	// in user space.
	writeChunkBytesMax = 1 << 20
	// retainedBufferBytesMax: a write buffer grown past this by one large
	// batch is dropped after use rather than kept.
	retainedBufferBytesMax = 4 << 20
	// appendEntriesMax bounds one Append batch.
	appendEntriesMax = 1 << 20
	// entryFieldsSizeBytesMax bounds what an encoded raftpb.Entry adds to
	// its data: three varint fields with tags (at most 11 bytes each) and
	// the data's tag and length (at most 6), rounded up.
	entryFieldsSizeBytesMax = 64
)

func (o Options) withDefaults() Options {
	if o.SegmentSizeBytes <= 0 {
		o.SegmentSizeBytes = DefaultSegmentSizeBytes
	}
	if o.SnapshotsKept <= 0 {
		o.SnapshotsKept = DefaultSnapshotsKept
	}
	return o
}

// Recovered is the durable raft state Open found.
type Recovered struct {
	// Metadata is what Create was given.
	Metadata []byte
	// Snapshot is the newest valid snapshot the WAL continues from; nil if
	// none (then Entries start at index 1).
	Snapshot *raftpb.Snapshot
	// HardState is the last one saved; nil if none. Its Commit is raised to
	// the snapshot's index if it was below (a snapshot holds only committed
	// entries; raft refuses to restart with Commit below its snapshot).
	HardState *raftpb.HardState
	// Entries follow the snapshot's index with no gaps; later appends have
	// replaced the entries they overwrote.
	Entries []*raftpb.Entry
	// Notes report what Open repaired or set aside to get here, in the
	// order it decided: the member tells its operator (RecoveryNote.Warn).
	Notes []RecoveryNote
}

// Storage is a member's durable raft state: WAL segments in walDir and
// snapshot files in snapDir. It is used by one goroutine at a time and
// starts none. After any error from writing or syncing, every later call
// returns that error: the member must stop (an fsync error may have lost
// data the OS had accepted; retrying and acknowledging would lie).
type Storage struct {
	fs      FS
	walDir  string
	snapDir string
	opts    Options

	metadata []byte
	shape    logShape
	hs       *raftpb.HardState // newest appended, copied into each new segment's head
	// markers are the snapshot records in the retained WAL, oldest first.
	markers []snapshotMarker

	segments []segmentInfo // retained, oldest first; the last is open in file
	file     File
	// openSegmentSizeBytes is where the open segment's records end, counting
	// buffered bytes: the next record goes there. The file is usually
	// longer (allocated space, zeros), so this is tracked, never taken from
	// the file's size.
	openSegmentSizeBytes int64
	segmentHasLog        bool // the open segment holds records past its head
	chain                uint32

	buf      []byte // records not yet handed to the FS (< writeChunkBytesMax)
	bodyBuf  []byte
	unsynced bool // something was written since the last Sync

	err error // sticky
}

var errClosed = errors.New("disk: storage is closed")

// Exists reports whether walDir holds a WAL: at least one segment under its
// final name. Create writes its first segment under a temporary name and
// renames it only when whole, so a half-created WAL does not count.
func Exists(fsys FS, walDir string) bool {
	segs, _, err := listSegments(fsys, walDir)
	return err == nil && len(segs) > 0
}

// Create makes a new WAL in walDir (and snapDir for snapshots) holding
// metadata, and returns it open for appending. It refuses if a WAL exists.
func Create(fsys FS, walDir, snapDir string, metadata []byte, opts Options) (*Storage, error) {
	opts = opts.withDefaults()
	if len(metadata) > RecordBodyBytesMax {
		return nil, fmt.Errorf("disk: metadata of %d bytes exceeds %d", len(metadata), RecordBodyBytesMax)
	}
	if Exists(fsys, walDir) {
		return nil, fmt.Errorf("disk: create WAL in %s: %w", walDir, fs.ErrExist)
	}
	for _, dir := range []string{walDir, snapDir} {
		if err := fsys.MkdirAll(dir); err != nil {
			return nil, fmt.Errorf("disk: create %s: %w", dir, err)
		}
		if err := syncAncestors(fsys, dir); err != nil {
			return nil, err
		}
	}
	_, tmps, err := listSegments(fsys, walDir)
	if err != nil {
		return nil, err
	}
	for _, t := range tmps {
		if err := fsys.Remove(t); err != nil {
			return nil, fmt.Errorf("disk: remove leftover %s: %w", t, err)
		}
	}
	s := &Storage{fs: fsys, walDir: walDir, snapDir: snapDir, opts: opts, metadata: slices.Clone(metadata)}
	seg := segmentInfo{seq: 0, firstIndex: 1, name: path.Join(walDir, segmentName(0, 1))}
	head, chain := s.encodeHead(nil, seg, 0)
	if err := writeFileDurably(fsys, seg.name, opts.SegmentSizeBytes, head); err != nil {
		return nil, fmt.Errorf("disk: create WAL in %s: %w", walDir, err)
	}
	f, err := fsys.OpenAppend(seg.name)
	if err != nil {
		return nil, err
	}
	s.segments = []segmentInfo{seg}
	s.file, s.openSegmentSizeBytes, s.chain = f, int64(len(head)), chain
	return s, nil
}

// encodeHead appends the head of segment seg (header, metadata, newest
// snapshot marker, newest hard state) to dst; prevSegmentCRC chains it to
// the segment before. It returns the buffer and the head's last checksum.
func (s *Storage) encodeHead(dst []byte, seg segmentInfo, prevSegmentCRC uint32) ([]byte, uint32) {
	lastTerm, _ := s.shape.lastTerm()
	h := segmentHeader{seq: seg.seq, prevSegmentCRC: prevSegmentCRC, headRecords: 2}
	var newest *snapshotMarker
	if len(s.markers) > 0 {
		newest = &s.markers[len(s.markers)-1]
		h.headRecords++
	}
	var hsBody []byte
	if s.hs != nil {
		hsBody = mustMarshal(s.hs)
		h.headRecords++
	}
	dst, crc := AppendRecord(dst, Record{Type: RecordSegmentHeader, Index: seg.firstIndex, Term: lastTerm, Body: h.encode()}, 0)
	dst, crc = AppendRecord(dst, Record{Type: RecordMetadata, Body: s.metadata}, crc)
	if newest != nil {
		dst, crc = AppendRecord(dst, Record{Type: RecordSnapshot, Index: newest.index, Term: newest.term, Body: newest.encode(false)}, crc)
		newest.seq = seg.seq
	}
	if hsBody != nil {
		dst, crc = AppendRecord(dst, Record{Type: RecordHardState, Index: s.hs.GetCommit(), Term: s.hs.GetTerm(), Body: hsBody}, crc)
	}
	return dst, crc
}

func mustMarshal(m proto.Message) []byte {
	b, err := marshalOptions.Marshal(m)
	assertf(err == nil, "marshal %T: %v", m, err)
	return b
}

// Append writes entries, then hs if it is not nil, to the WAL. The records
// reach the FS before Append returns but are not durable until Sync.
// Entries must be contiguous and start at or below the last index + 1 (an
// append at index i replaces entries >= i, as raft overwrites), and above
// the newest snapshot.
func (s *Storage) Append(hs *raftpb.HardState, ents []*raftpb.Entry) error {
	if s.err != nil {
		return s.err
	}
	if err := s.checkAppend(ents); err != nil {
		return err
	}
	// The assertions below are checked before assertf is called: its
	// arguments would be boxed (and allocated) on every entry even when the
	// check passes.
	for _, e := range ents {
		body, err := marshalOptions.MarshalAppend(s.bodyBuf[:0], e)
		if err != nil {
			assertf(false, "marshal entry %d: %v", e.GetIndex(), err)
		}
		if len(body) > len(e.GetData())+entryFieldsSizeBytesMax {
			assertf(false, "entry %d encodes to %d bytes for %d of data", e.GetIndex(), len(body), len(e.GetData()))
		}
		s.bodyBuf = body
		if err := s.add(Record{Type: RecordEntry, Index: e.GetIndex(), Term: e.GetTerm(), Body: body}); err != nil {
			return err
		}
		if err := s.shape.appendEntry(e.GetIndex(), e.GetTerm()); err != nil {
			assertf(false, "checked entry %d rejected: %v", e.GetIndex(), err)
		}
	}
	if len(s.bodyBuf) > retainedBufferBytesMax {
		s.bodyBuf = nil
	}
	if hs != nil {
		s.hs = proto.Clone(hs).(*raftpb.HardState)
		// AppendRecord copies the body into s.buf, so the hard state is
		// marshalled into the entries' scratch buffer (a few bytes; it never
		// grows the buffer past retainedBufferBytesMax).
		body, err := marshalOptions.MarshalAppend(s.bodyBuf[:0], hs)
		if err != nil {
			assertf(false, "marshal %T: %v", hs, err)
		}
		s.bodyBuf = body
		if err := s.add(Record{Type: RecordHardState, Index: hs.GetCommit(), Term: hs.GetTerm(), Body: body}); err != nil {
			return err
		}
	}
	return s.flush()
}

// checkAppend refuses a batch that raft would never hand over; nothing is
// written then and the Storage stays usable.
func (s *Storage) checkAppend(ents []*raftpb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	if len(ents) > appendEntriesMax {
		return fmt.Errorf("disk: append of %d entries exceeds %d per batch", len(ents), appendEntriesMax)
	}
	first := ents[0].GetIndex()
	if first == 0 || first > s.shape.last+1 {
		return fmt.Errorf("disk: append at index %d, last index is %d", first, s.shape.last)
	}
	if n := s.newestSnapshotIndex(); first <= n {
		return fmt.Errorf("disk: append at index %d would overwrite entries covered by the snapshot at %d", first, n)
	}
	for i, e := range ents {
		if e.GetIndex() != first+uint64(i) {
			return fmt.Errorf("disk: append batch not contiguous: entry %d has index %d, want %d", i, e.GetIndex(), first+uint64(i))
		}
		if i > 0 && e.GetTerm() < ents[i-1].GetTerm() {
			return fmt.Errorf("disk: append batch terms decrease at index %d", e.GetIndex())
		}
		if size := len(e.GetData()) + entryFieldsSizeBytesMax; size > RecordBodyBytesMax {
			return fmt.Errorf("disk: entry %d of %d bytes exceeds %d", e.GetIndex(), size, RecordBodyBytesMax)
		}
	}
	return nil
}

// add encodes one record after the others, first starting a new segment if
// the open one is full.
func (s *Storage) add(rec Record) error {
	if s.segmentHasLog && s.openSegmentSizeBytes >= s.opts.SegmentSizeBytes {
		if err := s.rollover(); err != nil {
			return err
		}
	}
	before := len(s.buf)
	s.buf, s.chain = AppendRecord(s.buf, rec, s.chain)
	s.openSegmentSizeBytes += int64(len(s.buf) - before)
	s.segmentHasLog = true
	if len(s.buf) >= writeChunkBytesMax {
		return s.flush()
	}
	return nil
}

// flush hands the gathered records to the FS, right after the records
// before them.
func (s *Storage) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	seg := s.segments[len(s.segments)-1]
	offset := s.openSegmentSizeBytes - int64(len(s.buf))
	n, err := s.file.WriteAt(s.buf, offset)
	if err == nil && n != len(s.buf) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(s.buf))
	}
	if err != nil {
		return s.fail(fmt.Errorf("disk: write %s at offset %d: %w", seg.name, offset, err))
	}
	s.unsynced = true
	if cap(s.buf) > retainedBufferBytesMax {
		s.buf = nil
	} else {
		s.buf = s.buf[:0]
	}
	return nil
}

// rollover syncs and closes the open segment and starts the next one. The
// old segment is synced whole first, so only the newest segment can ever
// end in a torn record.
//
// The new segment is allocated SegmentSizeBytes (zeros) and the allocation
// made durable, the file synced and then the directory, before any record
// goes into it. Then every later write lands inside space the file system
// has already reserved and sized, and its Sync (fdatasync on OSFS) flushes
// data blocks without a metadata commit: on ext4, 1000 x (300-byte write +
// sync) took ~310 us a sync this way against ~500 us appending to a growing
// file (and ~510 us with FALLOC_FL_KEEP_SIZE, which leaves the size to grow).
// Syncing the allocation before use also means a crash leaves the new
// segment either absent, or present with its whole allocated length and
// some prefix of its records followed by zeros, never a length that only
// partly reached the medium; Open reads zeros after the last whole record
// as the end of the data. A crash before the head is whole leaves a newest
// segment with no whole head (empty or all zeros), which Open removes.
func (s *Storage) rollover() error {
	if err := s.flush(); err != nil {
		return err
	}
	old := s.segments[len(s.segments)-1]
	if err := s.file.Sync(); err != nil {
		return s.fail(fmt.Errorf("disk: fsync %s: %w", old.name, err))
	}
	if err := s.file.Close(); err != nil {
		return s.fail(fmt.Errorf("disk: close %s: %w", old.name, err))
	}
	s.file = nil
	firstIndex := s.shape.last + 1
	seg := segmentInfo{seq: old.seq + 1, firstIndex: firstIndex, name: path.Join(s.walDir, segmentName(old.seq+1, firstIndex))}
	f, err := s.fs.Create(seg.name)
	if err != nil {
		return s.fail(fmt.Errorf("disk: create %s: %w", seg.name, err))
	}
	s.segments = append(s.segments, seg)
	s.file = f
	if err := f.Allocate(s.opts.SegmentSizeBytes); err != nil {
		return s.fail(fmt.Errorf("disk: allocate %d bytes for %s: %w", s.opts.SegmentSizeBytes, seg.name, err))
	}
	if !s.opts.planted.skipAllocationSync {
		if err := f.Sync(); err != nil {
			return s.fail(fmt.Errorf("disk: fsync %s: %w", seg.name, err))
		}
		if err := s.fs.SyncDir(s.walDir); err != nil {
			return s.fail(fmt.Errorf("disk: fsync directory %s: %w", s.walDir, err))
		}
	}
	assertf(len(s.buf) == 0, "rollover with %d bytes buffered", len(s.buf))
	s.buf, s.chain = s.encodeHead(s.buf, seg, s.chain)
	s.openSegmentSizeBytes = int64(len(s.buf))
	s.segmentHasLog = false
	return s.flush()
}

// Sync makes everything appended so far durable with one sync of the open
// segment (the segment's directory entry was made durable when it was
// started). It does nothing if nothing was appended since the last Sync.
// An error is fatal.
func (s *Storage) Sync() error {
	if s.err != nil {
		return s.err
	}
	if err := s.flush(); err != nil {
		return err
	}
	if !s.unsynced {
		return nil
	}
	seg := s.segments[len(s.segments)-1]
	if err := s.file.Sync(); err != nil {
		return s.fail(fmt.Errorf("disk: fsync %s: %w", seg.name, err))
	}
	s.unsynced = false
	return nil
}

func (s *Storage) fail(err error) error {
	assertf(err != nil, "fail(nil)")
	if s.err == nil {
		s.err = err
	}
	return s.err
}

func (s *Storage) newestSnapshotIndex() uint64 { return newestMarkerIndex(s.markers) }

// SaveSnapshot makes snap durable and then releases what it makes
// redundant. In order: the snapshot file (temp, fsync, rename, fsync
// directory); a snapshot record in the WAL and an fsync (the commit point:
// Open uses a snapshot file only if the WAL vouches for it); then the WAL
// segments wholly covered, and snapshot files beyond Options.SnapshotsKept.
// A crash anywhere in between leaves a state Open recovers from.
//
// WAL segments are released up to the previous snapshot when two or more
// are kept (so that Open can fall back to it if the newest file is
// damaged), else up to snap itself. A snapshot past the log's last index,
// or one whose term disagrees with the log's at its index (a snapshot sent
// by the leader), restarts the log after it, as raft does.
//
// SaveSnapshot is WriteSnapshotFile then CommitSnapshot on one goroutine.
func (s *Storage) SaveSnapshot(snap *raftpb.Snapshot) error {
	if s.err != nil {
		return s.err
	}
	index, term := snap.GetMetadata().GetIndex(), snap.GetMetadata().GetTerm()
	if index == 0 {
		return errors.New("disk: save snapshot at index 0")
	}
	if i := newestUsableMarker(s.markers, -1); i >= 0 {
		newest := s.markers[i]
		if index == newest.index && term == newest.term {
			return nil // already saved
		}
		if index <= newest.index {
			return fmt.Errorf("disk: save snapshot at index %d term %d: not after the snapshot at index %d term %d",
				index, term, newest.index, newest.term)
		}
	}
	f, err := s.WriteSnapshotFile(snap)
	if err != nil {
		return s.fail(err)
	}
	return s.CommitSnapshot(f)
}

// SnapshotFile is a snapshot written durably to its file but not yet
// vouched for by the WAL: until CommitSnapshot, Open ignores it.
type SnapshotFile struct {
	index, term   uint64
	payloadCRC    uint32
	fileSizeBytes int64
	name          string
}

// String describes the file for logs.
func (f SnapshotFile) String() string {
	return fmt.Sprintf("snapshot %d/%d (%d bytes)", f.index, f.term, f.fileSizeBytes)
}

// WriteSnapshotFile writes snap's file durably (temp, fsync, rename, fsync
// directory) and nothing else. It reads only what never changes after Open
// (the FS and the snapshot directory), so a host may run it on a goroutine
// of its own while the WAL goes on taking appends and syncs: a large
// snapshot then does not hold up the log's group commit. The host runs one
// at a time, never during SaveSnapshot or CommitSnapshot (both list and
// remove snapshot files), and hands each result to CommitSnapshot before
// writing the next.
// An error is as fatal as a failed fsync of the log.
func (s *Storage) WriteSnapshotFile(snap *raftpb.Snapshot) (SnapshotFile, error) {
	index, term := snap.GetMetadata().GetIndex(), snap.GetMetadata().GetTerm()
	if index == 0 {
		return SnapshotFile{}, errors.New("disk: save snapshot at index 0")
	}
	pieces, payloadCRC, err := encodeSnapshotFile(snap)
	if err != nil {
		return SnapshotFile{}, err
	}
	name := path.Join(s.snapDir, snapName(index, term))
	if err := writeFileDurably(s.fs, name, 0, pieces...); err != nil {
		return SnapshotFile{}, fmt.Errorf("disk: save snapshot %s: %w", name, err)
	}
	var fileSizeBytes int64
	for _, p := range pieces {
		fileSizeBytes += int64(len(p))
	}
	return SnapshotFile{index: index, term: term, payloadCRC: payloadCRC, fileSizeBytes: fileSizeBytes, name: name}, nil
}

// CommitSnapshot makes a written snapshot file count: the WAL's snapshot
// record and its fsync, then the release of what the snapshot made
// redundant (see SaveSnapshot). A file overtaken while it was being written
// (the WAL committed a snapshot at or after its index meanwhile, one the
// leader sent) is removed instead, unless it is that very snapshot.
func (s *Storage) CommitSnapshot(f SnapshotFile) error {
	if s.err != nil {
		return s.err
	}
	index, term := f.index, f.term
	if i := markerIndexOf(s.markers, index, term); i >= 0 && s.markers[i].usable {
		return nil // already saved; the file was written again with the same bytes
	}
	if i := newestUsableMarker(s.markers, -1); i >= 0 && index <= s.markers[i].index {
		if err := s.fs.Remove(f.name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return s.fail(fmt.Errorf("disk: remove overtaken snapshot %s: %w", f.name, err))
		}
		return nil
	}
	reset := index > s.shape.last
	if t, ok := s.shape.termAt(index); !reset && ok && t != term {
		reset = true
	}
	m := snapshotMarker{index: index, term: term, reset: reset, payloadCRC: f.payloadCRC, fileSizeBytes: f.fileSizeBytes, usable: true}
	if err := s.add(Record{Type: RecordSnapshot, Index: index, Term: term, Body: m.encode(reset)}); err != nil {
		return err
	}
	m.seq = s.segments[len(s.segments)-1].seq
	if i := markerIndexOf(s.markers, index, term); i >= 0 {
		s.markers = slices.Delete(s.markers, i, i+1) // saved again: its earlier file was found damaged
	}
	s.markers = append(s.markers, m) // the last marker is the one saved most recently
	saved := len(s.markers) - 1
	if reset {
		s.shape.reset(index, term)
	}
	s.shape.forgetBelow(index)
	if err := s.Sync(); err != nil {
		return err
	}
	if err := s.releaseSegments(saved); err != nil {
		return err
	}
	if err := s.releaseSnapshotFiles(); err != nil {
		return err
	}
	s.forgetMarkers()
	return nil
}

// releaseSegments removes the oldest segments while every live entry above
// the anchor snapshot stays in the segments kept, and the anchor's marker
// too. Segment i holds live entries only below segments[i+1].firstIndex, so
// segments before k can go when firstIndex <= anchor+1 for segments 1..k.
// Removes go oldest first: a crash that keeps a prefix of them leaves the
// retained sequence numbers contiguous.
func (s *Storage) releaseSegments(saved int) error {
	anchor := s.markers[saved]
	if s.opts.SnapshotsKept >= 2 {
		i := newestUsableMarker(s.markers, saved)
		if i < 0 || s.markers[i].index >= anchor.index {
			return nil
		}
		anchor = s.markers[i]
	}
	cut := 0
	for i := 1; i < len(s.segments) && s.segments[i].firstIndex <= anchor.index+1 && s.segments[i].seq <= anchor.seq; i++ {
		cut = i
	}
	if cut == 0 {
		return nil
	}
	for _, seg := range s.segments[:cut] {
		if err := s.fs.Remove(seg.name); err != nil {
			return s.fail(fmt.Errorf("disk: release %s: %w", seg.name, err))
		}
	}
	if err := s.fs.SyncDir(s.walDir); err != nil {
		return s.fail(fmt.Errorf("disk: fsync directory %s: %w", s.walDir, err))
	}
	s.segments = slices.Delete(s.segments, 0, cut)
	firstSeq := s.segments[0].seq
	s.markers = slices.DeleteFunc(s.markers, func(m snapshotMarker) bool { return m.seq < firstSeq })
	return nil
}

// forgetMarkers drops markers whose snapshot file is gone or damaged,
// except the one with the highest index (entries at or below it stay
// committed) and the last saved (copied into new segment heads), so the
// list stays as short as the snapshot files kept.
func (s *Storage) forgetMarkers() {
	newest := s.newestSnapshotIndex()
	last := s.markers[len(s.markers)-1]
	s.markers = slices.DeleteFunc(s.markers, func(m snapshotMarker) bool {
		return !m.usable && m.index != newest && m != last
	})
	assertf(len(s.markers) <= s.opts.SnapshotsKept+2, "%d snapshot markers kept for %d snapshot files", len(s.markers), s.opts.SnapshotsKept)
}

// releaseSnapshotFiles keeps the SnapshotsKept newest snapshot files and
// removes the rest, oldest first in effect; files known to be damaged, and
// files newer than every snapshot record (saves that crashed before their
// commit point), are removed and do not count. Temporary files stay: one
// may be a WriteSnapshotFile in progress on another goroutine, and Open
// removes those a crash left behind.
func (s *Storage) releaseSnapshotFiles() error {
	files, _, err := listSnapFiles(s.fs, s.snapDir)
	if err != nil {
		return s.fail(fmt.Errorf("disk: list %s: %w", s.snapDir, err))
	}
	var remove []string
	kept := 0
	newest := s.newestSnapshotIndex()
	for k := len(files) - 1; k >= 0; k-- { // newest first
		f := files[k]
		i := markerIndexOf(s.markers, f.index, f.term)
		damaged := i >= 0 && !s.markers[i].usable
		orphan := i < 0 && f.index > newest
		if !damaged && !orphan && kept < s.opts.SnapshotsKept {
			kept++
			continue
		}
		remove = append(remove, f.name)
		if i >= 0 {
			s.markers[i].usable = false
		}
	}
	if len(remove) == 0 {
		return nil
	}
	for _, name := range remove {
		if err := s.fs.Remove(name); err != nil {
			return s.fail(fmt.Errorf("disk: remove %s: %w", name, err))
		}
	}
	if err := s.fs.SyncDir(s.snapDir); err != nil {
		return s.fail(fmt.Errorf("disk: fsync directory %s: %w", s.snapDir, err))
	}
	return nil
}

// Close closes the open segment. It does not sync: what was appended since
// the last Sync stays as durable as it was.
func (s *Storage) Close() error {
	if errors.Is(s.err, errClosed) {
		return nil
	}
	var err error
	if s.file != nil {
		err = s.file.Close()
		s.file = nil
	}
	s.err = errClosed
	return err
}

// LastIndex returns the index of the last entry appended (or of the
// snapshot the log restarted after).
func (s *Storage) LastIndex() uint64 { return s.shape.last }

// String describes the Storage deterministically, for traces.
func (s *Storage) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Storage(wal=%s snap=%s log=%s", s.walDir, s.snapDir, s.shape.String())
	if s.hs != nil {
		fmt.Fprintf(&b, " hs=(term %d vote %d commit %d)", s.hs.GetTerm(), s.hs.GetVote(), s.hs.GetCommit())
	}
	b.WriteString(" segments=[")
	for i, seg := range s.segments {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%d@%d", seg.seq, seg.firstIndex)
	}
	fmt.Fprintf(&b, "] open-segment-bytes=%d snapshots=[", s.openSegmentSizeBytes)
	for i, m := range s.markers {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%d/%d", m.index, m.term)
		if !m.usable {
			b.WriteString("(gone)")
		}
	}
	b.WriteString("]")
	if s.unsynced {
		b.WriteString(" unsynced")
	}
	if s.err != nil {
		fmt.Fprintf(&b, " err=%q", s.err.Error())
	}
	b.WriteString(")")
	return b.String()
}

// sameBytes compares metadata copies.
func sameBytes(a, b []byte) bool { return bytes.Equal(a, b) }

package disk

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// replay rebuilds the raft state from the records of the retained segments.
type replay struct {
	shape logShape
	ents  []*raftpb.Entry // ents[i] has index shape.base+1+i
	hs    *raftpb.HardState

	metadata     []byte
	haveMetadata bool
	markers      []snapshotMarker
}

func (r *replay) newestMarkerIndex() uint64 { return newestMarkerIndex(r.markers) }

// segmentStart checks a segment's header against the log so far: the
// writer stamped it with its own (last+1, lastTerm).
func (r *replay) segmentStart(first bool, header Record) error {
	if header.Index == 0 {
		return errors.New("segment header says first index 0")
	}
	if first {
		r.shape = logShape{base: header.Index - 1, baseTerm: header.Term, baseTermKnown: true, last: header.Index - 1}
		return nil
	}
	if header.Index != r.shape.last+1 {
		return fmt.Errorf("segment starts at index %d, the log before it ends at %d", header.Index, r.shape.last)
	}
	if lt, ok := r.shape.lastTerm(); ok && lt != header.Term {
		return fmt.Errorf("segment says the entry before it has term %d, the log says %d", header.Term, lt)
	}
	return nil
}

// record applies one record.
func (r *replay) record(rec Record, seq uint64) error {
	switch rec.Type {
	case RecordMetadata:
		if !r.haveMetadata {
			r.metadata, r.haveMetadata = append([]byte(nil), rec.Body...), true
		} else if !sameBytes(r.metadata, rec.Body) {
			return errors.New("metadata differs from the first segment's")
		}
	case RecordEntry:
		e, err := decodeEntry(rec.Body)
		if err != nil {
			return fmt.Errorf("decode entry: %w", err)
		}
		if e.GetIndex() != rec.Index || e.GetTerm() != rec.Term {
			return fmt.Errorf("entry says index %d term %d, its record index %d term %d", e.GetIndex(), e.GetTerm(), rec.Index, rec.Term)
		}
		if n := r.newestMarkerIndex(); rec.Index <= n {
			return fmt.Errorf("entry %d at or below the snapshot at %d", rec.Index, n)
		}
		if err := r.shape.appendEntry(rec.Index, rec.Term); err != nil {
			return err
		}
		// Entries from rec.Index on are replaced; if appendEntry restarted
		// the shape just below rec.Index, nothing before it is kept.
		keep := int(rec.Index - r.shape.base - 1)
		r.ents = append(r.ents[:keep], e)
		// Checked before assertf is called: its arguments (the shape's
		// String above all) would be built for every entry replayed.
		if r.ents[0].GetIndex() != r.shape.base+1 || uint64(len(r.ents)) != r.shape.last-r.shape.base {
			assertf(false, "replay holds entries %d..%d, shape %s", r.ents[0].GetIndex(), r.ents[len(r.ents)-1].GetIndex(), r.shape.String())
		}
	case RecordHardState:
		hs := &raftpb.HardState{}
		if err := proto.Unmarshal(rec.Body, hs); err != nil {
			return fmt.Errorf("decode hard state: %w", err)
		}
		if hs.GetCommit() != rec.Index || hs.GetTerm() != rec.Term {
			return fmt.Errorf("hard state says commit %d term %d, its record index %d term %d", hs.GetCommit(), hs.GetTerm(), rec.Index, rec.Term)
		}
		r.hs = hs
	case RecordSnapshot:
		m, err := decodeSnapshotMarker(rec)
		if err != nil {
			return err
		}
		m.seq = seq
		i := markerIndexOf(r.markers, m.index, m.term)
		if i < 0 && !m.reset && m.index > r.shape.last {
			return fmt.Errorf("snapshot record at index %d past the log's last index %d", m.index, r.shape.last)
		}
		if m.reset {
			r.shape.reset(m.index, m.term)
			r.ents = r.ents[:0]
		}
		if i >= 0 {
			// A copy in a later segment's head, or the snapshot saved
			// again after its file was found damaged: the latest record
			// vouches for the file.
			r.markers[i].seq, r.markers[i].payloadCRC, r.markers[i].fileSizeBytes = seq, m.payloadCRC, m.fileSizeBytes
		} else {
			r.markers = append(r.markers, m) // bounded by the WAL's verified bytes
		}
	default:
		return fmt.Errorf("unexpected %s record", rec.Type)
	}
	return nil
}

// Open reads the WAL in walDir and the snapshots in snapDir and returns the
// Storage open for appending after the last whole record, with what it
// recovered.
//
// Zeros after the last whole record of a segment are the allocated space
// not yet written (see Storage.rollover): the end of the data, kept as it
// is so that appends continue into it at the end of the data. A torn tail
// of the newest segment (a crash mid-append: a record cut short, or a
// damaged header, followed only by zeros) is cut back to the last whole
// record by truncating the file there and allocating it again, so the
// bytes after the data read zeros once more. A newest segment torn inside
// its head (a crash while starting it) is removed. The newest segment is
// allocated to Options.SegmentSizeBytes if it is shorter (a WAL written
// before segments were preallocated, or a cut). Open then syncs the newest
// segment and the WAL directory: what it returns is durable, even if the
// process that wrote it never synced, and so are the cut and the
// allocation. Any other damage (a damaged whole record, non-zero bytes
// after zeros) is refused with a *CorruptError naming the file and offset
// (errors.Is(err, ErrCorrupt)), and Open changes nothing then. So is a WAL
// that no valid snapshot file lets it continue from.
func Open(fsys FS, walDir, snapDir string, opts Options) (*Storage, Recovered, error) {
	opts = opts.withDefaults()
	segs, walTmps, err := listSegments(fsys, walDir)
	if err != nil {
		return nil, Recovered{}, fmt.Errorf("disk: open WAL %s: %w", walDir, err)
	}
	if len(segs) == 0 {
		return nil, Recovered{}, fmt.Errorf("disk: open WAL %s: no segments: %w", walDir, fs.ErrNotExist)
	}
	for i, seg := range segs {
		if seg.seq != segs[0].seq+uint64(i) {
			return nil, Recovered{}, &CorruptError{File: seg.name, OffsetBytes: 0,
				Err: fmt.Errorf("segment %d follows segment %d: segments are missing", seg.seq, segs[i-1].seq)}
		}
	}

	r := &replay{}
	var (
		newest              segmentScan
		newestFileSizeBytes int64
		dropNewest          bool
		prevEndCRC          uint32
		retained            = segs
		notes               []RecoveryNote
		// olderTail is an older segment's tail awaiting the next segment's
		// header: passed over if that header continues the log from the
		// record before it, refused otherwise.
		olderTail     segmentTail
		olderTailName string
	)
	for i, seg := range segs {
		data, fileSizeBytes, err := readSegment(fsys, seg.name)
		if err != nil {
			return nil, Recovered{}, err
		}
		isNewest := i == len(segs)-1
		sc, err := scanSegment(seg.name, data)
		if err != nil {
			return nil, Recovered{}, err
		}
		if isNewest && sc.tail.kind != tailNone && !sc.tail.cuttable() && !opts.PlantedCutDamage {
			return nil, Recovered{}, sc.tail.refusal(seg.name, true)
		}
		if !sc.headComplete {
			if isNewest && i > 0 && olderTail.kind == tailNone {
				// A crash while the segment was being started: nothing in it
				// was ever acknowledged (its head is synced with the first
				// Sync after the rollover).
				dropNewest, retained = true, segs[:i]
				notes = append(notes, RecoveryNote{Kind: RecoveryHalfStartedSegmentRemoved, File: seg.name, OffsetBytes: sc.validEndBytes,
					Reason: "a crash while the segment was being started; nothing in it was acknowledged"})
				break
			}
			if olderTail.kind != tailNone {
				return nil, Recovered{}, olderTail.refusal(olderTailName, false)
			}
			if sc.tail.kind != tailNone && !isNewest {
				return nil, Recovered{}, sc.tail.refusal(seg.name, false)
			}
			return nil, Recovered{}, &CorruptError{File: seg.name, OffsetBytes: sc.validEndBytes, Err: errors.New("segment ends inside its head")}
		}
		corrupt := func(off int64, err error) error {
			return &CorruptError{File: seg.name, OffsetBytes: off, Err: err}
		}
		if sc.header.seq != seg.seq || sc.first.Index != seg.firstIndex {
			return nil, Recovered{}, corrupt(0, fmt.Errorf("header says segment %d first index %d, the name says %d and %d",
				sc.header.seq, sc.first.Index, seg.seq, seg.firstIndex))
		}
		if i > 0 && sc.header.prevSegmentCRC != prevEndCRC {
			if olderTail.kind != tailNone {
				return nil, Recovered{}, olderTail.refusal(olderTailName, false)
			}
			return nil, Recovered{}, corrupt(0, fmt.Errorf("segment chains to checksum %08x, the segment before ends with %08x",
				sc.header.prevSegmentCRC, prevEndCRC))
		}
		if olderTail.kind != tailNone {
			// This segment continues the log from the record before the
			// older segment's tail: the tail was never part of the log.
			notes = append(notes, olderTail.note(olderTailName, false))
			olderTail = segmentTail{}
		}
		if err := r.segmentStart(i == 0, sc.first); err != nil {
			return nil, Recovered{}, corrupt(0, err)
		}
		for _, rec := range sc.records {
			if err := r.record(rec.Record, seg.seq); err != nil {
				return nil, Recovered{}, corrupt(rec.offsetBytes, err)
			}
		}
		if !isNewest && sc.tail.kind != tailNone {
			olderTail, olderTailName = sc.tail, seg.name
		}
		prevEndCRC = sc.endCRC
		newest, newestFileSizeBytes = sc, fileSizeBytes
	}
	if !r.haveMetadata {
		return nil, Recovered{}, &CorruptError{File: retained[0].name, Err: errors.New("no metadata record")}
	}

	snapFiles, snapTmps, err := listSnapFiles(fsys, snapDir)
	if err != nil {
		return nil, Recovered{}, fmt.Errorf("disk: open snapshots %s: %w", snapDir, err)
	}
	chosen, snap, verdicts, err := chooseSnapshot(fsys, r, snapFiles)
	if err != nil {
		return nil, Recovered{}, fmt.Errorf("disk: open %s with %s: %w", walDir, snapDir, err)
	}

	rec := Recovered{Metadata: r.metadata, Snapshot: snap}
	for _, v := range verdicts.skipped {
		notes = append(notes, RecoveryNote{Kind: RecoverySnapshotSkipped, File: v.name, Reason: v.reason})
	}
	if r.hs != nil {
		rec.HardState = proto.Clone(r.hs).(*raftpb.HardState)
		if snap != nil && rec.HardState.GetCommit() < chosen.index {
			rec.HardState.Commit = proto.Uint64(chosen.index)
		}
	}
	from := 0
	if snap != nil {
		from = int(chosen.index - r.shape.base)
	}
	rec.Entries = append([]*raftpb.Entry(nil), r.ents[from:]...)

	// Everything checked: now repair, and only now change anything.
	s := &Storage{fs: fsys, walDir: walDir, snapDir: snapDir, opts: opts,
		metadata: r.metadata, shape: r.shape, hs: r.hs, markers: r.markers, segments: retained}
	if dropNewest {
		dropped := segs[len(segs)-1].name
		if err := fsys.Remove(dropped); err != nil {
			return nil, Recovered{}, fmt.Errorf("disk: remove half-started segment %s: %w", dropped, err)
		}
	}
	last := retained[len(retained)-1]
	f, err := fsys.OpenAppend(last.name)
	if err != nil {
		return nil, Recovered{}, err
	}
	fileSizeBytes := newestFileSizeBytes
	if newest.tail.kind != tailNone {
		// Truncate, then allocate again below, rather than overwrite the
		// cut bytes with zeros: a crash partway through a zeroing write
		// could leave zeros before the bytes cut, which reads as damage; a
		// crash between truncate and allocate leaves a clean shorter file.
		assertf(newest.tail.cuttable() || opts.PlantedCutDamage, "cutting a %s tail of %s", newest.tail.kind, last.name)
		if err := f.Truncate(newest.validEndBytes); err != nil {
			f.Close()
			return nil, Recovered{}, fmt.Errorf("disk: cut the tail of %s at offset %d: %w", last.name, newest.validEndBytes, err)
		}
		fileSizeBytes = newest.validEndBytes
		notes = append(notes, newest.tail.note(last.name, true))
	}
	// validEndBytes <= fileSizeBytes (the data read is at most the file, and
	// a cut leaves exactly validEndBytes), so a file shorter than a segment
	// also holds less data than one.
	if fileSizeBytes < opts.SegmentSizeBytes {
		if err := f.Allocate(opts.SegmentSizeBytes); err != nil {
			f.Close()
			return nil, Recovered{}, fmt.Errorf("disk: allocate %d bytes for %s: %w", opts.SegmentSizeBytes, last.name, err)
		}
	}
	// What Open returns, raft takes as persisted. After a process restart
	// without a machine crash, the page cache may still hold records the
	// last process wrote but never synced (and the newest segment's
	// directory entry may be unsynced): make them durable now. This also
	// makes the cut of a torn tail and the allocation durable before
	// anything is appended.
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, Recovered{}, fmt.Errorf("disk: fsync %s: %w", last.name, err)
	}
	if err := fsys.SyncDir(walDir); err != nil {
		f.Close()
		return nil, Recovered{}, fmt.Errorf("disk: fsync directory %s: %w", walDir, err)
	}
	s.file, s.openSegmentSizeBytes, s.chain = f, newest.validEndBytes, newest.endCRC
	s.segmentHasLog = len(newest.records)+1 > newest.header.headRecords
	if err := removeLeftovers(fsys, walDir, walTmps); err != nil {
		f.Close()
		return nil, Recovered{}, err
	}
	if err := removeLeftovers(fsys, snapDir, append(snapTmps, verdicts.uncommitted...)); err != nil {
		f.Close()
		return nil, Recovered{}, err
	}
	for _, n := range walTmps {
		notes = append(notes, RecoveryNote{Kind: RecoveryTempFileRemoved, File: n})
	}
	for _, n := range snapTmps {
		notes = append(notes, RecoveryNote{Kind: RecoveryTempFileRemoved, File: n})
	}
	for _, n := range verdicts.uncommitted {
		notes = append(notes, RecoveryNote{Kind: RecoveryUncommittedSnapshotRemoved, File: n})
	}
	setAside, err := setAsideDamaged(fsys, snapDir, verdicts.damaged, snap != nil)
	if err != nil {
		f.Close()
		return nil, Recovered{}, err
	}
	rec.Notes = append(notes, setAside...)
	return s, rec, nil
}

// setAsideDamaged renames each damaged snapshot file so that it is kept
// but never read again, and returns a note for each. usedOlder says whether
// Open continued from an older snapshot (or else from the WAL alone).
func setAsideDamaged(fsys FS, snapDir string, damaged []snapVerdict, usedOlder bool) ([]RecoveryNote, error) {
	if len(damaged) == 0 {
		return nil, nil
	}
	names, err := fsys.List(snapDir)
	if err != nil {
		return nil, fmt.Errorf("disk: list %s: %w", snapDir, err)
	}
	existing := make(map[string]bool, len(names))
	for _, n := range names {
		existing[n] = true
	}
	fallback := "recovered from the WAL alone"
	if usedOlder {
		fallback = "recovered from an older snapshot and the WAL"
	}
	var notes []RecoveryNote
	for _, d := range damaged {
		keptAs := setAsideName(existing, d.name)
		if err := fsys.Rename(d.name, keptAs); err != nil {
			return nil, fmt.Errorf("disk: set aside damaged snapshot %s: %w", d.name, err)
		}
		existing[path.Base(keptAs)] = true
		notes = append(notes, RecoveryNote{Kind: RecoverySnapshotSetAside, File: d.name, KeptAs: keptAs, Reason: d.reason + "; " + fallback})
	}
	if err := fsys.SyncDir(snapDir); err != nil {
		return nil, fmt.Errorf("disk: fsync directory %s: %w", snapDir, err)
	}
	return notes, nil
}

func removeLeftovers(fsys FS, dir string, names []string) error {
	for _, n := range names {
		if err := fsys.Remove(n); err != nil {
			return fmt.Errorf("disk: remove leftover %s: %w", n, err)
		}
	}
	if len(names) > 0 {
		if err := fsys.SyncDir(dir); err != nil {
			return fmt.Errorf("disk: fsync directory %s: %w", dir, err)
		}
	}
	return nil
}

// snapVerdict is why chooseSnapshot passed over a snapshot file.
type snapVerdict struct{ name, reason string }

// snapVerdicts sorts the snapshot files chooseSnapshot passed over.
type snapVerdicts struct {
	// uncommitted are files newer than every snapshot record of the WAL:
	// saves that crashed before their commit point, to be removed.
	uncommitted []string
	// damaged are files the WAL vouches for that do not read back whole:
	// to be set aside.
	damaged []snapVerdict
	// skipped are other files passed over, left in place.
	skipped []snapVerdict
}

// chooseSnapshot picks the newest snapshot file that the WAL vouches for
// (a snapshot record with its index, term, checksum and size), that reads
// back whole, and that the replayed log continues from. It marks the WAL's
// markers usable or not, and sorts the newer files it passed over. With no
// usable snapshot it succeeds only if the WAL holds the log from index 1;
// otherwise it refuses, listing why each candidate failed.
func chooseSnapshot(fsys FS, r *replay, files []snapFile) (snapshotMarker, *raftpb.Snapshot, snapVerdicts, error) {
	markerOf := func(index, term uint64) int { return markerIndexOf(r.markers, index, term) }
	for i := range r.markers {
		r.markers[i].usable = false
	}
	for _, f := range files {
		if i := markerOf(f.index, f.term); i >= 0 {
			r.markers[i].usable = true
		}
	}
	var v snapVerdicts
	var reasons []string
	var chosen snapshotMarker
	var snap *raftpb.Snapshot
	for k := len(files) - 1; k >= 0 && snap == nil; k-- {
		f := files[k]
		i := markerOf(f.index, f.term)
		if i < 0 {
			const why = "no snapshot record in the WAL"
			if f.index > r.newestMarkerIndex() {
				v.uncommitted = append(v.uncommitted, f.name)
			} else {
				v.skipped = append(v.skipped, snapVerdict{f.name, why})
			}
			reasons = append(reasons, fmt.Sprintf("%s: %s", f.name, why))
			continue
		}
		m := r.markers[i]
		if err := continuesFrom(r, m); err != nil {
			v.skipped = append(v.skipped, snapVerdict{f.name, err.Error()})
			reasons = append(reasons, fmt.Sprintf("%s: %v", f.name, err))
			continue
		}
		data, err := readFile(fsys, f.name, fileSizeBytesMax)
		if err == nil {
			snap, err = decodeSnapshotFile(data, f.index, f.term, m)
		}
		if err != nil {
			r.markers[i].usable = false
			v.damaged = append(v.damaged, snapVerdict{f.name, err.Error()})
			reasons = append(reasons, fmt.Sprintf("%s: %v", f.name, err))
			continue
		}
		chosen = m
	}
	if snap != nil {
		return chosen, snap, v, nil
	}
	if r.shape.base == 0 {
		return snapshotMarker{}, nil, v, nil // the WAL holds the whole log
	}
	if len(reasons) == 0 {
		reasons = append(reasons, "no snapshot files")
	}
	return snapshotMarker{}, nil, snapVerdicts{}, fmt.Errorf("the WAL starts after index %d and no snapshot lets it continue: %s",
		r.shape.base, strings.Join(reasons, "; "))
}

// continuesFrom checks that the replayed log holds every entry after the
// snapshot at m and agrees with it at m's index.
func continuesFrom(r *replay, m snapshotMarker) error {
	if m.index < r.shape.base {
		return fmt.Errorf("the WAL's log starts after index %d, past the snapshot's index %d", r.shape.base, m.index)
	}
	if m.index > r.shape.last {
		return fmt.Errorf("the snapshot's index %d is past the log's last index %d", m.index, r.shape.last)
	}
	if t, ok := r.shape.termAt(m.index); ok && t != m.term {
		return fmt.Errorf("the log has term %d at index %d, the snapshot term %d", t, m.index, m.term)
	}
	return nil
}

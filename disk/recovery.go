package disk

import (
	"fmt"
	"path"
)

// What Open repaired or set aside. Open decides alone (disk writes no
// logs, and its simulated twin stays deterministic) and reports every
// decision in Recovered.Notes, so that the member can tell its operator:
// which torn tail it cut and how many bytes, which stray bytes it found
// after a segment's last record, which snapshot file it found damaged and
// under which name it kept it.

// RecoveryKind says what kind of decision a RecoveryNote reports.
type RecoveryKind uint8

const (
	// RecoveryTornTailCut: the newest segment ended in a torn write (a
	// crash mid-append), cut back to its last whole record.
	RecoveryTornTailCut RecoveryKind = iota + 1
	// RecoveryStrayBytesCut: non-zero bytes in the newest segment's unused
	// tail, after zeros where the next record would start, that cannot be
	// records (none ends where they end), were cut.
	RecoveryStrayBytesCut
	// RecoveryStrayBytesIgnored: bytes after an older segment's last record,
	// which the next segment's header proves is the segment's last record of
	// the log, were left in place and not read.
	RecoveryStrayBytesIgnored
	// RecoveryHalfStartedSegmentRemoved: the newest segment ended inside its
	// head (a crash while starting it); it held nothing acknowledged.
	RecoveryHalfStartedSegmentRemoved
	// RecoverySnapshotSetAside: a snapshot file the WAL vouches for could not
	// be read back whole; it was renamed (kept, never read again) and Open
	// continued from an older snapshot or from the WAL alone.
	RecoverySnapshotSetAside
	// RecoverySnapshotSkipped: a snapshot file newer than the one chosen was
	// passed over for a reason other than damage; it is left in place.
	RecoverySnapshotSkipped
	// RecoveryUncommittedSnapshotRemoved: a snapshot file newer than every
	// snapshot record of the WAL (a save that crashed before its commit
	// point) was removed.
	RecoveryUncommittedSnapshotRemoved
	// RecoveryTempFileRemoved: a temporary file of an interrupted write was
	// removed.
	RecoveryTempFileRemoved
)

func (k RecoveryKind) String() string {
	switch k {
	case RecoveryTornTailCut:
		return "torn-tail-cut"
	case RecoveryStrayBytesCut:
		return "stray-bytes-cut"
	case RecoveryStrayBytesIgnored:
		return "stray-bytes-ignored"
	case RecoveryHalfStartedSegmentRemoved:
		return "half-started-segment-removed"
	case RecoverySnapshotSetAside:
		return "snapshot-set-aside"
	case RecoverySnapshotSkipped:
		return "snapshot-skipped"
	case RecoveryUncommittedSnapshotRemoved:
		return "uncommitted-snapshot-removed"
	case RecoveryTempFileRemoved:
		return "temp-file-removed"
	}
	return fmt.Sprintf("RecoveryKind(%d)", uint8(k))
}

// RecoveryNote is one decision Open made to open a data directory.
type RecoveryNote struct {
	Kind RecoveryKind
	File string // the file concerned
	// OffsetBytes and SizeBytes locate the bytes concerned in File: the
	// cut, or the stray bytes from the first non-zero one (WAL notes).
	OffsetBytes, SizeBytes int64
	// RecordsEndBytes is where the segment's last whole record ends (WAL
	// notes).
	RecordsEndBytes int64
	// KeptAs is the name a damaged snapshot file was renamed to.
	KeptAs string
	// Reason says why, in words.
	Reason string
}

// Warn reports whether an operator should hear of the note as a warning:
// everything except the leftovers every crash can leave.
func (n RecoveryNote) Warn() bool {
	return n.Kind != RecoveryTempFileRemoved && n.Kind != RecoveryUncommittedSnapshotRemoved
}

// String says what was done, to what and why, in one line.
func (n RecoveryNote) String() string {
	switch n.Kind {
	case RecoveryTornTailCut:
		return fmt.Sprintf("%s: cut a torn tail of %d bytes at offset %d (the last whole record ends there): %s",
			n.File, n.SizeBytes, n.OffsetBytes, n.Reason)
	case RecoveryStrayBytesCut:
		return fmt.Sprintf("%s: cut %d stray bytes at offsets %d to %d in the unused space after the last record (which ends at offset %d): %s",
			n.File, n.SizeBytes, n.OffsetBytes, n.OffsetBytes+n.SizeBytes-1, n.RecordsEndBytes, n.Reason)
	case RecoveryStrayBytesIgnored:
		return fmt.Sprintf("%s: %d bytes at offsets %d to %d after the last record (which ends at offset %d) are not part of the log and were left in place: %s",
			n.File, n.SizeBytes, n.OffsetBytes, n.OffsetBytes+n.SizeBytes-1, n.RecordsEndBytes, n.Reason)
	case RecoveryHalfStartedSegmentRemoved:
		return fmt.Sprintf("%s: removed a segment that ends inside its head at offset %d: %s", n.File, n.OffsetBytes, n.Reason)
	case RecoverySnapshotSetAside:
		return fmt.Sprintf("%s: damaged snapshot set aside as %s (not deleted, never read again): %s", n.File, path.Base(n.KeptAs), n.Reason)
	case RecoverySnapshotSkipped:
		return fmt.Sprintf("%s: snapshot not used and left in place: %s", n.File, n.Reason)
	case RecoveryUncommittedSnapshotRemoved:
		return fmt.Sprintf("%s: removed a snapshot no WAL record commits (a save interrupted before its commit point)", n.File)
	case RecoveryTempFileRemoved:
		return fmt.Sprintf("%s: removed the temporary file of an interrupted write", n.File)
	}
	return fmt.Sprintf("%s: %s %s", n.File, n.Kind, n.Reason)
}

// brokenSnapshotSuffix marks a damaged snapshot file set aside: Open lists
// only names ending in .snap, so it never reads one again.
const brokenSnapshotSuffix = ".broken"

// setAsideName picks the name a damaged snapshot file is kept under:
// <name>.broken, or <name>.broken.<n> if an earlier one of that name was
// set aside already (the same snapshot saved again and damaged again).
func setAsideName(existing map[string]bool, name string) string {
	candidate := name + brokenSnapshotSuffix
	for n := 2; existing[path.Base(candidate)]; n++ {
		candidate = fmt.Sprintf("%s%s.%d", name, brokenSnapshotSuffix, n)
	}
	return candidate
}

// tailKind classifies what follows a segment's last whole record.
type tailKind uint8

const (
	tailNone    tailKind = iota // zeros only: the allocated space not yet written
	tailTorn                    // a torn write: a record cut short, or a damaged header, over zeros
	tailStray                   // zeros where the next record would start, then non-zero bytes
	tailCorrupt                 // a damaged whole record (or what a torn write cannot leave)
)

// segmentTail is what scanSegment found after the last whole record, at
// offset recordsEnd (sc.validEndBytes). dataEnd is one past the last
// non-zero byte of the segment.
type segmentTail struct {
	kind       tailKind
	recordsEnd int64
	dataEnd    int64
	// firstNonZero is the offset of the first non-zero byte at or after
	// recordsEnd.
	firstNonZero int64
	// endsInMarker: the last non-zero byte is a record end marker, so the
	// bytes may be the end of records whose start was lost.
	endsInMarker bool
	// headerAt is the offset of the first sound record header among stray
	// bytes (one that passes its own checksum), or -1: records written
	// there, whole or torn, misdirected or with their first blocks lost.
	headerAt int64
	reason   string // for tailTorn and tailCorrupt: what the decoder said
	err      error  // tailCorrupt's error as a *CorruptError
}

// cuttable reports whether the newest segment may be cut back to its last
// whole record. Torn writes are (Open cannot know which bytes were synced,
// and a record is acknowledged only once whole and synced). Stray bytes
// are when nothing in them can be a record: they hold no sound record
// header, and they end in anything but a record end marker (every record
// written whole ends in one), while nothing was written where the next
// record would start. Stray bytes that could be records (a misdirected
// batch, records whose first blocks were lost) are refused.
func (t segmentTail) cuttable() bool {
	return t.kind == tailTorn || (t.kind == tailStray && !t.endsInMarker && t.headerAt < 0)
}

// refusal is the error for a tail that may not be cut (or, in an older
// segment, may not be passed over).
func (t segmentTail) refusal(name string, newest bool) error {
	switch t.kind {
	case tailCorrupt:
		return t.err
	case tailTorn:
		if newest {
			break
		}
		return &CorruptError{File: name, OffsetBytes: t.recordsEnd,
			Err: fmt.Errorf("%s: a torn record, but not in the newest segment, and the next segment does not continue from the record before it", t.reason)}
	case tailStray:
		var why string
		switch {
		case !newest:
			why = "the next segment does not continue from the last record before them"
		case t.headerAt >= 0:
			why = fmt.Sprintf("they hold a record header at offset %d, so they may be records written in the wrong place or whose first blocks were lost", t.headerAt)
		default:
			why = "they end in a record end marker, so they may be records whose first blocks were lost"
		}
		return &CorruptError{File: name, OffsetBytes: t.firstNonZero, What: "data",
			Err: fmt.Errorf("%d non-zero bytes at offsets %d to %d, after zeros from offset %d where the last whole record ends: %s",
				t.dataEnd-t.firstNonZero, t.firstNonZero, t.dataEnd-1, t.recordsEnd, why)}
	}
	panic(fmt.Sprintf("disk: no refusal for a %d tail of %s", t.kind, name))
}

// note is the RecoveryNote for a tail cut from the newest segment, or
// passed over in an older one.
func (t segmentTail) note(name string, cut bool) RecoveryNote {
	n := RecoveryNote{File: name, RecordsEndBytes: t.recordsEnd}
	switch {
	case !cut:
		n.Kind = RecoveryStrayBytesIgnored
		n.OffsetBytes, n.SizeBytes = t.firstNonZero, t.dataEnd-t.firstNonZero
		n.Reason = "the next segment's header continues the log from that record"
		if t.reason != "" {
			n.Reason += " (they read as: " + t.reason + ")"
		}
	case t.kind == tailTorn:
		n.Kind = RecoveryTornTailCut
		n.OffsetBytes, n.SizeBytes = t.recordsEnd, t.dataEnd-t.recordsEnd
		n.Reason = t.reason
	default:
		n.Kind = RecoveryStrayBytesCut
		n.OffsetBytes, n.SizeBytes = t.firstNonZero, t.dataEnd-t.firstNonZero
		n.Reason = "nothing was written where the next record would start, they hold no record header, and no record ends where they end (a record ends in 0xE5), so they are not records"
	}
	return n
}

func (k tailKind) String() string {
	switch k {
	case tailNone:
		return "none"
	case tailTorn:
		return "torn"
	case tailStray:
		return "stray"
	case tailCorrupt:
		return "corrupt"
	}
	return fmt.Sprintf("tailKind(%d)", uint8(k))
}

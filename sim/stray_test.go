package sim

import (
	"testing"

	"github.com/noded/noded/disk"
)

// TestReportsCut: the check on stray bytes fails a restart whose notes do
// not cover the stray offset in that file (a silent cut, a note about
// other bytes or another file), and passes one that does.
func TestReportsCut(t *testing.T) {
	const file = "member/wal/0000000000000000-0000000000000001.wal"
	cut := func(kind disk.RecoveryKind, name string, off, size int64) disk.RecoveryNote {
		return disk.RecoveryNote{Kind: kind, File: name, OffsetBytes: off, SizeBytes: size}
	}
	for _, tc := range []struct {
		name  string
		notes []disk.RecoveryNote
		want  bool
	}{
		{"no note", nil, false},
		{"stray cut covering it", []disk.RecoveryNote{cut(disk.RecoveryStrayBytesCut, file, 1000, 3)}, true},
		{"torn tail covering it", []disk.RecoveryNote{cut(disk.RecoveryTornTailCut, file, 990, 20)}, true},
		{"half-started segment removed", []disk.RecoveryNote{cut(disk.RecoveryHalfStartedSegmentRemoved, file, 0, 0)}, true},
		{"a cut of other bytes", []disk.RecoveryNote{cut(disk.RecoveryStrayBytesCut, file, 1003, 3)}, false},
		{"a cut in another file", []disk.RecoveryNote{cut(disk.RecoveryStrayBytesCut, "member/wal/other.wal", 1000, 3)}, false},
		{"bytes passed over, not cut", []disk.RecoveryNote{cut(disk.RecoveryStrayBytesIgnored, file, 1000, 3)}, false},
	} {
		if got := reportsCut(tc.notes, file, 1001); got != tc.want {
			t.Errorf("%s: reportsCut = %v, want %v", tc.name, got, tc.want)
		}
	}
}

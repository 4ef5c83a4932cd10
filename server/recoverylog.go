package server

import (
	"go.uber.org/zap"

	"github.com/noded/noded/disk"
)

// logRecoveryNotes tells the operator what opening the data directory
// repaired or set aside (disk decides; it writes no logs of its own): a cut
// torn tail and its size, stray bytes cut or passed over and where, a
// damaged snapshot kept aside under a new name. Leftovers that every crash
// can leave (temporary files, uncommitted snapshots) are logged at info.
//
// The notes name files relative to the FS root, which is "/" (openStorage).
func logRecoveryNotes(lg *zap.Logger, dataDir string, notes []disk.RecoveryNote) {
	for _, n := range notes {
		n.File = "/" + n.File
		if n.KeptAs != "" {
			n.KeptAs = "/" + n.KeptAs
		}
		fields := []zap.Field{
			zap.String("data-dir", dataDir),
			zap.String("kind", n.Kind.String()),
			zap.String("file", n.File),
		}
		switch n.Kind {
		case disk.RecoveryTornTailCut, disk.RecoveryStrayBytesCut, disk.RecoveryStrayBytesIgnored:
			fields = append(fields, zap.Int64("offset", n.OffsetBytes), zap.Int64("bytes", n.SizeBytes),
				zap.Int64("records-end-offset", n.RecordsEndBytes))
		case disk.RecoverySnapshotSetAside:
			fields = append(fields, zap.String("kept-as", n.KeptAs))
		}
		if n.Warn() {
			lg.Warn("recovery: "+n.String(), fields...)
		} else {
			lg.Info("recovery: "+n.String(), fields...)
		}
	}
}

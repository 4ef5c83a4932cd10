//go:build !linux

package disk

import (
	"fmt"
)

// Sync is fsync (F_FULLFSYNC on Darwin, as the os package does): this
// build has no fdatasync to call.
func (f *osFile) Sync() error {
	if err := f.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", f.f.Name(), err)
	}
	return nil
}

// Allocate extends the size without reserving space (extendTo): the WAL
// sees the same shape as on Linux (segments as long as they were allocated,
// zeros after the data) and stays correct, but later writes allocate their
// blocks as they land, so syncs cost what they would without preallocation.
func (f *osFile) Allocate(sizeBytes int64) error {
	if sizeBytes < 0 {
		return fmt.Errorf("allocate %s: negative size %d", f.f.Name(), sizeBytes)
	}
	if err := f.extendTo(sizeBytes); err != nil {
		return fmt.Errorf("extend %s to %d bytes: %w", f.f.Name(), sizeBytes, err)
	}
	return nil
}

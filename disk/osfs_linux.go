//go:build linux

package disk

import (
	"errors"
	"fmt"
	"syscall"
)

// eintrRetriesMax bounds the retries of a system call interrupted by a
// signal (the Go runtime's preemption signals make EINTR routine).
const eintrRetriesMax = 1000

// Sync flushes the file's data with fdatasync(2): unlike fsync it does not
// wait for a journal commit of the timestamps a write changes, which is most
// of an fsync's cost when a write lands inside space Allocate reserved. It
// still flushes the metadata needed to read the data back (the size and the
// block map, including unwritten extents turned written), so it is as
// durable as fsync for everything this package reads. etcd syncs its WAL
// the same way.
func (f *osFile) Sync() error {
	err := f.control(func(fd int) error { return syscall.Fdatasync(fd) })
	if err != nil {
		return fmt.Errorf("fdatasync %s: %w", f.f.Name(), err)
	}
	return nil
}

// Allocate reserves [0, sizeBytes) with fallocate(2) mode 0, which also
// extends the size (FALLOC_FL_KEEP_SIZE would leave every later write
// extending the file, and its sync as slow as without preallocation). A file
// system without fallocate gets the size extended only (extendTo), as etcd's
// fileutil.Preallocate falls back to ftruncate.
func (f *osFile) Allocate(sizeBytes int64) error {
	if sizeBytes < 0 {
		return fmt.Errorf("allocate %s: negative size %d", f.f.Name(), sizeBytes)
	}
	if sizeBytes == 0 {
		return nil // fallocate refuses a zero length; there is nothing to reserve
	}
	err := f.control(func(fd int) error { return syscall.Fallocate(fd, 0, 0, sizeBytes) })
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
		err = f.extendTo(sizeBytes)
	}
	if err != nil {
		return fmt.Errorf("fallocate %s to %d bytes: %w", f.f.Name(), sizeBytes, err)
	}
	return nil
}

// control runs call on the file's descriptor, retrying it while a signal
// interrupts it, as the os package does for its own calls.
func (f *osFile) control(call func(fd int) error) error {
	rc, err := f.f.SyscallConn()
	if err != nil {
		return err
	}
	var callErr error
	err = rc.Control(func(fd uintptr) {
		for range eintrRetriesMax {
			if callErr = call(int(fd)); !errors.Is(callErr, syscall.EINTR) {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return callErr
}

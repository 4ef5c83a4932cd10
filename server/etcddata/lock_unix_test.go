//go:build unix

package etcddata

import (
	"os"
	"syscall"
	"testing"
)

// holdLock takes the exclusive lock a running etcd (through bbolt) holds
// on its database, and returns its release.
func holdLock(t *testing.T, path string) func() {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	return func() { f.Close() }
}

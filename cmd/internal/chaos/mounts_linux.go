package chaos

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Mounts the campaign makes: a small tmpfs for the full-disk fault and the
// lost-writes FUSE layer. Both need the right to mount (root, as CI and the
// development machines run); without it those fault kinds are left out of
// the plan and the campaign says why.

// canMount reports whether this process can mount tmpfs and FUSE here, and
// if not, why.
func canMount(scratch string) (tmpfs, fuse error) {
	dir, err := os.MkdirTemp(scratch, "mountprobe-")
	if err != nil {
		return err, err
	}
	defer os.RemoveAll(dir)
	t := filepath.Join(dir, "tmpfs")
	if err := os.Mkdir(t, 0o755); err != nil {
		return err, err
	}
	if err := syscall.Mount("tmpfs", t, "tmpfs", 0, "size=1m"); err != nil {
		tmpfs = fmt.Errorf("mount tmpfs: %w (needs root)", err)
	} else {
		_ = syscall.Unmount(t, 0)
	}
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		fuse = fmt.Errorf("open /dev/fuse: %w", err)
	} else {
		f.Close()
		l, err := mountLazyFS(filepath.Join(dir, "back"), filepath.Join(dir, "mnt"), 0)
		if err != nil {
			fuse = err
		} else {
			_ = l.unmount()
		}
	}
	return tmpfs, fuse
}

// diskFullBytes is the size of the tmpfs a member's data directory lives on
// when the plan fills its disk: a WAL segment (64 MiB, allocated up front)
// with room for snapshots and a second segment's start, so the member runs
// until the ballast takes the rest.
const diskFullBytes = 96 << 20

// smallDisk is a tmpfs of diskFullBytes and the ballast that fills it.
type smallDisk struct {
	dir     string
	ballast string
}

func mountSmallDisk(dir string) (*smallDisk, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", diskFullBytes)); err != nil {
		return nil, fmt.Errorf("mount tmpfs at %s: %w", dir, err)
	}
	return &smallDisk{dir: dir, ballast: filepath.Join(dir, "ballast")}, nil
}

// fill writes the ballast until the file system is full.
func (d *smallDisk) fill() (int64, error) {
	f, err := os.OpenFile(d.ballast, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	var written int64
	for {
		n, err := f.Write(chunk)
		written += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			return written, nil
		}
		if err != nil {
			return written, err
		}
	}
}

// free removes the ballast.
func (d *smallDisk) free() error {
	err := os.Remove(d.ballast)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// preserve copies what the tmpfs holds (but the ballast) to dst, so a
// failing run keeps it after the unmount.
func (d *smallDisk) preserve(dst string) error {
	return filepath.Walk(d.dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == d.ballast {
			return err
		}
		rel, _ := filepath.Rel(d.dir, p)
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

func (d *smallDisk) unmount() error {
	return syscall.Unmount(d.dir, syscall.MNT_DETACH)
}

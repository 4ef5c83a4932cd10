package disk

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// OSFS is the production FS: files under a root directory of the operating
// system. It is safe for use by one goroutine at a time per file; the
// Storage above it is single-threaded anyway.
type OSFS struct {
	root string
}

// NewOSFS returns an FS rooted at the directory root.
func NewOSFS(root string) FS { return &OSFS{root: root} }

func (o *OSFS) path(name string) (string, error) {
	c, err := cleanName(name)
	if err != nil {
		return "", err
	}
	return filepath.Join(o.root, filepath.FromSlash(c)), nil
}

// Create implements FS.
func (o *OSFS) Create(name string) (File, error) {
	p, err := o.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return &osFile{f: f}, nil
}

// Open implements FS.
func (o *OSFS) Open(name string) (File, error) {
	p, err := o.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	return &osFile{f: f}, nil
}

// OpenAppend implements FS.
func (o *OSFS) OpenAppend(name string) (File, error) {
	p, err := o.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, err
	}
	return &osFile{f: f}, nil
}

// Rename implements FS.
func (o *OSFS) Rename(oldname, newname string) error {
	if !sameParentClean(oldname, newname) {
		return &fs.PathError{Op: "rename", Path: oldname + " -> " + newname, Err: fs.ErrInvalid}
	}
	op, err := o.path(oldname)
	if err != nil {
		return err
	}
	np, err := o.path(newname)
	if err != nil {
		return err
	}
	return os.Rename(op, np)
}

// Remove implements FS.
func (o *OSFS) Remove(name string) error {
	p, err := o.path(name)
	if err != nil {
		return err
	}
	return os.Remove(p)
}

// List implements FS.
func (o *OSFS) List(dir string) ([]string, error) {
	p, err := o.path(dir)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(p) // sorted by name
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

// MkdirAll implements FS.
func (o *OSFS) MkdirAll(dir string) error {
	p, err := o.path(dir)
	if err != nil {
		return err
	}
	return os.MkdirAll(p, 0o755)
}

// SyncDir implements FS.
func (o *OSFS) SyncDir(dir string) error {
	p, err := o.path(dir)
	if err != nil {
		return err
	}
	d, err := os.Open(p)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return fmt.Errorf("fsync directory %s: %w", p, err)
	}
	return d.Close()
}

// Stat implements FS.
func (o *OSFS) Stat(name string) (int64, error) {
	p, err := o.path(name)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// String describes the FS.
func (o *OSFS) String() string { return "OSFS(" + o.root + ")" }

type osFile struct {
	f *os.File
}

func (f *osFile) Write(p []byte) (int, error)              { return f.f.Write(p) }
func (f *osFile) WriteAt(p []byte, off int64) (int, error) { return f.f.WriteAt(p, off) }
func (f *osFile) ReadAt(p []byte, off int64) (int, error)  { return f.f.ReadAt(p, off) }
func (f *osFile) Close() error                             { return f.f.Close() }

// Sync and Allocate are in osfs_linux.go (fdatasync, fallocate) and
// osfs_other.go (fsync, and extending the size without reserving space).

// extendTo makes the file sizeBytes long if it is shorter, without
// reserving space: the new bytes read as zeros and are allocated as they are
// written. It is Allocate where the platform or file system cannot reserve
// space; the size is what Open reads, so the WAL's shape is the same either
// way and only the speed of later syncs differs.
func (f *osFile) extendTo(sizeBytes int64) error {
	fi, err := f.f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() >= sizeBytes {
		return nil
	}
	return f.f.Truncate(sizeBytes)
}

func (f *osFile) Truncate(sizeBytes int64) error {
	if err := f.f.Truncate(sizeBytes); err != nil {
		return err
	}
	offset, err := f.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if offset > sizeBytes {
		_, err = f.f.Seek(sizeBytes, io.SeekStart)
	}
	return err
}

// sameParentClean reports whether two names, once cleaned, share a parent.
func sameParentClean(a, b string) bool {
	ca, err := cleanName(a)
	if err != nil {
		return false
	}
	cb, err := cleanName(b)
	if err != nil {
		return false
	}
	return sameParent(ca, cb)
}

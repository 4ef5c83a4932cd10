package disk

import (
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// FS is the narrow file system the WAL and the snapshot files are written
// through. Names are slash-separated and relative to the FS root; "." is the
// root itself. OSFS maps them onto a directory of the operating system;
// SimFS keeps them in memory and can crash.
//
// Durability contract (what SimFS enforces and what OSFS relies on the
// operating system for): a file's contents are durable once File.Sync
// returns nil; a create, rename or remove in a directory is durable once
// SyncDir of that directory returns nil. Until then a crash may lose them.
type FS interface {
	// Create creates the named file, or truncates it if it exists, and opens
	// it for reading and writing with the write offset at 0.
	Create(name string) (File, error)
	// Open opens the named file for reading only.
	Open(name string) (File, error)
	// OpenAppend opens an existing file for reading and writing with the
	// write offset at its end (its size, allocated space included).
	OpenAppend(name string) (File, error)
	// Rename renames a file within one directory (both names must have the
	// same parent), replacing newname if it exists.
	Rename(oldname, newname string) error
	// Remove removes a file.
	Remove(name string) error
	// List returns the names of the entries of a directory, sorted.
	List(dir string) ([]string, error)
	// MkdirAll creates a directory and any missing parents.
	MkdirAll(dir string) error
	// SyncDir makes the creates, renames and removes in dir durable.
	SyncDir(dir string) error
	// Stat returns the size of a file.
	Stat(name string) (sizeBytes int64, err error)
}

// File is an open file. Write lands at the file's write offset and
// advances it (for files written front to back: snapshots); WriteAt lands
// where it is told and leaves the write offset alone (for WAL segments,
// whose records go at offsets the Storage tracks inside space allocated
// beforehand).
type File interface {
	Write(p []byte) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	ReadAt(p []byte, off int64) (int, error)
	// Sync makes the file's contents durable, its size included. An error
	// is fatal for the member: what was written may or may not be on the
	// medium. OSFS uses fdatasync where it has it: it skips flushing
	// timestamps, which nothing here reads, but still flushes the size and
	// the allocation that reading the data back needs.
	Sync() error
	// Truncate changes the file's size; the write offset moves back to the
	// new end if it was past it.
	Truncate(sizeBytes int64) error
	// Allocate makes the file at least sizeBytes long, the new bytes reading
	// as zeros, and reserves their space on the medium where the platform
	// can, so that writes into it later change no file size and need no
	// block allocation: their Sync then flushes data without a journal
	// commit for metadata. It never shrinks the file or changes its
	// existing bytes. Like a write, it is durable only after Sync.
	Allocate(sizeBytes int64) error
	Close() error
}

// cleanName checks a slash-separated relative name and returns its clean
// form. Absolute names and names that climb out of the root are refused so
// that OSFS and SimFS agree on what a name means.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", &fs.PathError{Op: "name", Path: name, Err: fs.ErrInvalid}
	}
	if strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
		return "", &fs.PathError{Op: "name", Path: name, Err: fs.ErrInvalid}
	}
	c := path.Clean(name)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", &fs.PathError{Op: "name", Path: name, Err: fs.ErrInvalid}
	}
	return c, nil
}

// sameParent reports whether two clean names live in the same directory.
func sameParent(a, b string) bool { return path.Dir(a) == path.Dir(b) }

// fileSizeBytesMax bounds how much of one file readFile will load: no WAL
// segment or snapshot file this package writes comes near it, and a larger
// file is refused rather than loaded.
const fileSizeBytesMax int64 = 16 << 30

// readFile reads a whole file. Its size comes from Stat, never from a field
// inside the file, and is capped by limitBytes.
func readFile(fsys FS, name string, limitBytes int64) ([]byte, error) {
	f, sizeBytes, err := openSized(fsys, name, limitBytes)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, sizeBytes)
	if err := readFullAt(f, buf, 0); err != nil {
		return nil, fmt.Errorf("disk: read %s: %w", name, err)
	}
	return buf, nil
}

// openSized opens a file for reading and returns it with its size from
// Stat, refusing a file larger than limitBytes before opening it.
func openSized(fsys FS, name string, limitBytes int64) (File, int64, error) {
	sizeBytes, err := fsys.Stat(name)
	if err != nil {
		return nil, 0, err
	}
	if sizeBytes < 0 || sizeBytes > limitBytes {
		return nil, 0, fmt.Errorf("disk: %s is %d bytes, more than the %d this package reads", name, sizeBytes, limitBytes)
	}
	f, err := fsys.Open(name)
	if err != nil {
		return nil, 0, err
	}
	return f, sizeBytes, nil
}

// readFullAt fills p from off, as the file's size promised.
func readFullAt(f File, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil // io.ReaderAt may return io.EOF with a full read at the end
	}
	if err == nil {
		err = fmt.Errorf("got %d of %d bytes at offset %d", n, len(p), off)
	}
	return err
}

// writeFileDurably writes a whole file, pieces one after the other, under a
// temporary name, syncs it, renames it into place and syncs the directory: a
// crash at any point leaves either no file under name or all of the pieces.
// With allocateSizeBytes above their size the file is allocated to that size
// first (zeros after them), and the allocation is as durable as they are
// when the file appears.
func writeFileDurably(fsys FS, name string, allocateSizeBytes int64, pieces ...[]byte) error {
	tmp := name + tmpSuffix
	f, err := fsys.Create(tmp)
	if err != nil {
		return err
	}
	var sizeBytes int64
	for _, p := range pieces {
		sizeBytes += int64(len(p))
	}
	if allocateSizeBytes > sizeBytes {
		if err := f.Allocate(allocateSizeBytes); err != nil {
			f.Close()
			return fmt.Errorf("disk: allocate %d bytes for %s: %w", allocateSizeBytes, tmp, err)
		}
	}
	for _, p := range pieces {
		if _, err := f.Write(p); err != nil {
			f.Close()
			return fmt.Errorf("disk: write %s: %w", tmp, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("disk: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("disk: close %s: %w", tmp, err)
	}
	if err := fsys.Rename(tmp, name); err != nil {
		return err
	}
	if err := fsys.SyncDir(path.Dir(name)); err != nil {
		return fmt.Errorf("disk: sync directory of %s: %w", name, err)
	}
	return nil
}

// tmpSuffix marks files being written; Open removes any it finds.
const tmpSuffix = ".tmp"

// pathDepthMax bounds the walk up a directory name.
const pathDepthMax = 64

// syncAncestors makes dir's own entry, and each of its parents' entries,
// durable: after MkdirAll a crash could otherwise lose the new directories.
func syncAncestors(fsys FS, dir string) error {
	d, err := cleanName(dir)
	if err != nil {
		return err
	}
	for depth := 0; d != "."; depth++ {
		assertf(depth < pathDepthMax, "directory %q nests deeper than %d", dir, pathDepthMax)
		parent := path.Dir(d)
		if err := fsys.SyncDir(parent); err != nil {
			return fmt.Errorf("disk: sync directory %s: %w", parent, err)
		}
		d = parent
	}
	return nil
}

// assertf panics when an invariant does not hold. Assertions stay on in
// production: a broken invariant in the storage layer must stop the member
// before it acknowledges anything more.
func assertf(cond bool, format string, args ...any) {
	if !cond {
		panic("disk: assertion failed: " + fmt.Sprintf(format, args...))
	}
}

package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// lazyFS is a FUSE file system over a backing directory that loses
// unsynced writes on command, as LazyFS does for etcd's robustness tests.
// Every write to a file is kept in this process's memory (its "page
// cache") until the file is fsynced, and only then written to the backing
// file and synced there. Reads see the cached writes, so a member killed
// with kill -9 and restarted reads what it wrote, as it would after a
// process crash on a real machine; loseUnsynced, called while the member
// is down, drops every cached write, as a power loss would. Metadata
// (create, rename, unlink, truncate, allocate) goes to the backing
// directory at once: only file data can be lost, not directory entries.
// Files are opened with direct I/O, so the kernel's own page cache never
// keeps what this layer dropped.
type lazyFS struct {
	backing   string
	mount     string
	server    *fuse.Server
	slowFsync time.Duration

	mu      sync.Mutex
	pending map[uint64]*pendingWrites // by the backing file's inode number
	// down is set from the instant of a power loss (powerCut) until its
	// writes are dropped (loseUnsynced): a sync still in flight then never
	// reaches the disk, and nothing more is written.
	down  bool
	epoch uint64 // counts power losses; a sync begun before one is void
	stats lazyStats
}

type lazyStats struct {
	writes        int64
	syncs         int64
	lostBytes     int64 // dropped by loseUnsynced
	lostFiles     int64
	lossesApplied int64
}

// pendingWrites are a file's writes since its last fsync, oldest first.
type pendingWrites struct {
	extents []extent
	end     int64 // the highest offset written
	bytes   int64
}

type extent struct {
	off  int64
	data []byte
}

// pendingBytesMax bounds what one member may leave unsynced; a member
// writes far less between fsyncs, so reaching it means the layer is
// misused.
const pendingBytesMax = 512 << 20

func mountLazyFS(backing, mount string, slowFsync time.Duration) (*lazyFS, error) {
	for _, d := range []string{backing, mount} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return nil, err
	}
	l := &lazyFS{backing: backing, mount: mount, slowFsync: slowFsync, pending: map[uint64]*pendingWrites{}}
	root := &fs.LoopbackRoot{Path: backing, Dev: uint64(st.Dev)}
	root.NewNode = func(r *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
		return &lazyNode{LoopbackNode: fs.LoopbackNode{RootData: r}, lfs: l}
	}
	rootNode := &lazyNode{LoopbackNode: fs.LoopbackNode{RootData: root}, lfs: l}
	root.RootNode = rootNode
	zero := time.Duration(0)
	server, err := fs.Mount(mount, rootNode, &fs.Options{
		MountOptions: fuse.MountOptions{DirectMountStrict: true, FsName: "nodechaos-lazyfs", Name: "lazyfs"},
		AttrTimeout:  &zero, EntryTimeout: &zero, NegativeTimeout: &zero,
	})
	if err != nil {
		return nil, fmt.Errorf("mount lost-writes FUSE layer at %s: %w", mount, err)
	}
	l.server = server
	return l, nil
}

func (l *lazyFS) unmount() error {
	if l.server == nil {
		return nil
	}
	err := l.server.Unmount()
	l.server = nil
	return err
}

// powerCut is the instant of a power loss: syncs in flight fail, and
// nothing more is written until loseUnsynced. Call it before killing the
// member, so that its last fsync cannot complete behind its back.
func (l *lazyFS) powerCut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = true
	l.epoch++
}

// loseUnsynced drops every write not yet fsynced. The member must be down.
func (l *lazyFS) loseUnsynced() (files, bytes int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = false
	for ino, p := range l.pending {
		files++
		bytes += p.bytes
		delete(l.pending, ino)
	}
	l.stats.lostFiles += files
	l.stats.lostBytes += bytes
	l.stats.lossesApplied++
	return files, bytes
}

func (l *lazyFS) write(ino uint64, off int64, data []byte) syscall.Errno {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return syscall.EIO
	}
	p := l.pending[ino]
	if p == nil {
		p = &pendingWrites{}
		l.pending[ino] = p
	}
	if p.bytes+int64(len(data)) > pendingBytesMax {
		return syscall.ENOSPC
	}
	l.stats.writes++
	p.extents = append(p.extents, extent{off: off, data: append([]byte(nil), data...)})
	p.end = max(p.end, off+int64(len(data)))
	p.bytes += int64(len(data))
	return 0
}

// overlay applies the cached writes to buf, which holds the file from off.
func (l *lazyFS) overlay(ino uint64, off int64, buf []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pending[ino]
	if p == nil {
		return
	}
	end := off + int64(len(buf))
	for _, e := range p.extents {
		eEnd := e.off + int64(len(e.data))
		if eEnd <= off || e.off >= end {
			continue
		}
		from, to := max(e.off, off), min(eEnd, end)
		copy(buf[from-off:to-off], e.data[from-e.off:to-e.off])
	}
}

func (l *lazyFS) pendingEnd(ino uint64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.pending[ino]; p != nil {
		return p.end
	}
	return 0
}

// truncated forgets cached writes past size.
func (l *lazyFS) truncated(ino uint64, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pending[ino]
	if p == nil {
		return
	}
	kept := p.extents[:0]
	p.end, p.bytes = 0, 0
	for _, e := range p.extents {
		if e.off >= size {
			continue
		}
		if e.off+int64(len(e.data)) > size {
			e.data = e.data[:size-e.off]
		}
		kept = append(kept, e)
		p.end = max(p.end, e.off+int64(len(e.data)))
		p.bytes += int64(len(e.data))
	}
	p.extents = kept
}

func (l *lazyFS) forget(ino uint64) {
	l.mu.Lock()
	delete(l.pending, ino)
	l.mu.Unlock()
}

// flush writes the cached writes of ino to fd and syncs it. The delay
// comes first, while the writes are still only cached: a crash during a
// slow fsync loses them, as it would on a slow disk. The lock is held
// throughout, so no read sees the file between cache and disk.
func (l *lazyFS) flush(ino uint64, fd int) syscall.Errno {
	l.mu.Lock()
	epoch := l.epoch
	l.mu.Unlock()
	time.Sleep(l.slowFsync)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down || l.epoch != epoch {
		return syscall.EIO // the power went while this sync was under way
	}
	l.stats.syncs++
	if p := l.pending[ino]; p != nil {
		for _, e := range p.extents {
			if _, err := syscall.Pwrite(fd, e.data, e.off); err != nil {
				return fs.ToErrno(err)
			}
		}
		delete(l.pending, ino)
	}
	return fs.ToErrno(syscall.Fdatasync(fd))
}

// lazyNode is a loopback node whose files cache their writes.
type lazyNode struct {
	fs.LoopbackNode
	lfs *lazyFS
}

var (
	_ fs.NodeOpener    = (*lazyNode)(nil)
	_ fs.NodeCreater   = (*lazyNode)(nil)
	_ fs.NodeGetattrer = (*lazyNode)(nil)
	_ fs.NodeSetattrer = (*lazyNode)(nil)
	_ fs.NodeUnlinker  = (*lazyNode)(nil)
	_ fs.NodeRenamer   = (*lazyNode)(nil)
)

func (n *lazyNode) backingPath(name string) string {
	return filepath.Join(n.lfs.backing, n.Path(n.Root()), name)
}

func (n *lazyNode) wrap(fh fs.FileHandle) (fs.FileHandle, syscall.Errno) {
	lf, ok := fh.(*fs.LoopbackFile)
	if !ok {
		return fh, 0
	}
	fd, _ := lf.PassthroughFd()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		lf.Release(context.Background())
		return nil, fs.ToErrno(err)
	}
	return &lazyFile{lf: lf, fd: fd, ino: st.Ino, lfs: n.lfs}, 0
}

func (n *lazyNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, _, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	fh, errno = n.wrap(fh)
	return fh, fuse.FOPEN_DIRECT_IO, errno
}

func (n *lazyNode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	inode, fh, _, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	fh, errno = n.wrap(fh)
	return inode, fh, fuse.FOPEN_DIRECT_IO, errno
}

func (n *lazyNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if errno := n.LoopbackNode.Getattr(ctx, fh, out); errno != 0 {
		return errno
	}
	out.Size = max(out.Size, uint64(n.lfs.pendingEnd(out.Ino)))
	return 0
}

func (n *lazyNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if lf, ok := fh.(*lazyFile); ok {
		fh = lf.lf
	}
	if errno := n.LoopbackNode.Setattr(ctx, fh, in, out); errno != 0 {
		return errno
	}
	if size, ok := in.GetSize(); ok {
		n.lfs.truncated(out.Ino, int64(size))
	}
	out.Size = max(out.Size, uint64(n.lfs.pendingEnd(out.Ino)))
	return 0
}

// inodeOf is the backing inode of name, 0 if it does not exist.
func (n *lazyNode) inodeOf(name string) uint64 {
	var st syscall.Stat_t
	if err := syscall.Lstat(n.backingPath(name), &st); err != nil {
		return 0
	}
	return st.Ino
}

func (n *lazyNode) Unlink(ctx context.Context, name string) syscall.Errno {
	ino := n.inodeOf(name)
	errno := n.LoopbackNode.Unlink(ctx, name)
	if errno == 0 && ino != 0 {
		n.lfs.forget(ino) // its number may be reused by a new file
	}
	return errno
}

func (n *lazyNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	var replaced uint64
	if p, ok := newParent.(*lazyNode); ok {
		replaced = p.inodeOf(newName)
	}
	errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
	if errno == 0 && replaced != 0 && replaced != n.inodeOf(name) {
		n.lfs.forget(replaced)
	}
	return errno
}

// lazyFile is an open file whose writes wait in lazyFS until fsync.
type lazyFile struct {
	lf  *fs.LoopbackFile
	fd  int
	ino uint64
	lfs *lazyFS
}

var (
	_ fs.FileReader    = (*lazyFile)(nil)
	_ fs.FileWriter    = (*lazyFile)(nil)
	_ fs.FileFsyncer   = (*lazyFile)(nil)
	_ fs.FileFlusher   = (*lazyFile)(nil)
	_ fs.FileReleaser  = (*lazyFile)(nil)
	_ fs.FileGetattrer = (*lazyFile)(nil)
	_ fs.FileAllocater = (*lazyFile)(nil)
)

func (f *lazyFile) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	var st syscall.Stat_t
	if err := syscall.Fstat(f.fd, &st); err != nil {
		return nil, fs.ToErrno(err)
	}
	size := max(st.Size, f.lfs.pendingEnd(f.ino))
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	buf = buf[:min(int64(len(buf)), size-off)]
	n, err := syscall.Pread(f.fd, buf, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	clear(buf[max(n, 0):])
	f.lfs.overlay(f.ino, off, buf)
	return fuse.ReadResultData(buf), 0
}

func (f *lazyFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if errno := f.lfs.write(f.ino, off, data); errno != 0 {
		return 0, errno
	}
	return uint32(len(data)), 0
}

func (f *lazyFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return f.lfs.flush(f.ino, f.fd)
}

func (f *lazyFile) Flush(ctx context.Context) syscall.Errno   { return f.lf.Flush(ctx) }
func (f *lazyFile) Release(ctx context.Context) syscall.Errno { return f.lf.Release(ctx) }

func (f *lazyFile) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	if errno := f.lf.Getattr(ctx, out); errno != 0 {
		return errno
	}
	out.Size = max(out.Size, uint64(f.lfs.pendingEnd(f.ino)))
	return 0
}

func (f *lazyFile) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	return f.lf.Allocate(ctx, off, size, mode)
}

package disk

// SimFS is the simulator's disk: an in-memory FS that knows, for every file
// and every directory, what is durable and what is not, and on a simulated
// crash keeps only the durable part (or a seeded-random prefix of the rest).
//
// Fault model.
//   - File contents: every file has its durable contents (as of its last
//     Sync) and the ordered list of writes, truncates and allocations since.
//     Crash keeps the durable contents plus, by mode, none of the pending
//     operations (CrashLoseUnsynced), a random prefix of them whose last
//     write may be torn at any byte (CrashTorn), or such a prefix followed
//     by zeros up to the size the file had before the crash (CrashZeroTail:
//     a preallocated or extended file whose data blocks never reached the
//     medium). An allocation (File.Allocate) is such an operation: a crash
//     before the Sync after it may keep it or lose it, and it is kept only
//     with everything before it.
//   - Allocated space: a file is its written bytes followed by zeros up to
//     its size, and only the written bytes are stored, so a preallocated
//     64 MiB segment costs what was written into it. Reads, Stat and
//     DurableSize see the size, allocated zeros included.
//   - Directories: creates, renames and removes in a directory are pending
//     until SyncDir of that directory. Crash keeps none of them
//     (CrashLoseUnsynced) or a random prefix per directory (the other modes),
//     so metadata operations within one directory persist in order, as a
//     journalling file system gives. Entries under a lost directory are lost.
//   - FailNextSync: the next File.Sync or SyncDir returns the error and makes
//     nothing durable.
//   - FlipBit / FlipRandomBit: a bit of the written bytes flips in every
//     version of the file (what reads see, the durable bytes and any pending
//     write covering it): media corruption, synced data included.
//   - MisdirectNextWrite: the next Write lands offsetDelta bytes away from
//     where it was aimed; the place it was aimed at keeps its old bytes
//     (zeros past the old end), and the write offset advances as if the
//     write had landed where aimed.
//   - HaltAfterOps: after n more mutating operations every operation fails
//     with ErrHalted until Crash: the machine lost power at that point.
//
// Determinism: SimFS never draws randomness of its own; Crash and
// FlipRandomBit draw from the *rand.Rand handed in, in sorted name order.
// Nothing here depends on map iteration order.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"path"
	"slices"
	"strings"
)

// CrashMode selects what a crash keeps of the data that was not yet durable.
type CrashMode int

const (
	// CrashLoseUnsynced keeps only durable data and durable directory entries.
	CrashLoseUnsynced CrashMode = iota
	// CrashTorn keeps durable data plus a random prefix of the pending
	// operations of each file and directory; the last write kept may be torn
	// at any byte.
	CrashTorn
	// CrashZeroTail is CrashTorn, after which each file reads zeros from the
	// end of what was kept up to the size it had before the crash.
	CrashZeroTail
)

// CrashModes lists every mode, for sweeps.
var CrashModes = []CrashMode{CrashLoseUnsynced, CrashTorn, CrashZeroTail}

func (m CrashMode) String() string {
	switch m {
	case CrashLoseUnsynced:
		return "lose-unsynced"
	case CrashTorn:
		return "torn"
	case CrashZeroTail:
		return "zero-tail"
	}
	return fmt.Sprintf("CrashMode(%d)", int(m))
}

// ErrHalted is returned by every SimFS operation after HaltAfterOps fired
// and before Crash.
var ErrHalted = errors.New("disk: simulated machine is halted (power lost)")

// errStaleHandle is returned by a File opened before the last Crash.
var errStaleHandle = errors.New("file handle opened before a simulated crash")

// simPendingOpsMax bounds the pending operations of one file or directory
// between syncs. Contiguous writes coalesce into one, so only a member that
// never syncs could reach it.
const simPendingOpsMax = 1 << 16

type simInode struct {
	data    simContent // what reads see now
	durable simContent // what survives any crash: contents as of the last Sync
	pending []simFileOp
}

// simContent is a file's contents: written, then zeros up to sizeBytes
// (allocated or extended space nothing was written to). Invariant:
// len(written) <= sizeBytes.
type simContent struct {
	written   []byte
	sizeBytes int64
}

func (c simContent) clone() simContent {
	return simContent{written: slices.Clone(c.written), sizeBytes: c.sizeBytes}
}

// readAt copies the contents from off into p, zeros past the written bytes,
// and returns how many bytes it filled (fewer than len(p) at the end).
func (c simContent) readAt(p []byte, off int64) int {
	if off >= c.sizeBytes {
		return 0
	}
	n := int(min(int64(len(p)), c.sizeBytes-off))
	copied := 0
	if off < int64(len(c.written)) {
		copied = copy(p[:n], c.written[off:])
	}
	clear(p[copied:n])
	return n
}

// materialize makes the first upToBytes bytes (at most the size) part of
// written, so that they can be changed in place.
func (c *simContent) materialize(upToBytes int64) {
	upToBytes = min(upToBytes, c.sizeBytes)
	if upToBytes > int64(len(c.written)) {
		c.written = append(c.written, make([]byte, upToBytes-int64(len(c.written)))...)
	}
}

type simFileOpKind uint8

const (
	simWrite simFileOpKind = iota + 1
	simTruncate
	simAllocate
)

type simFileOp struct {
	kind      simFileOpKind
	offset    int64  // simWrite: where the bytes land
	data      []byte // simWrite: the bytes (owned)
	sizeBytes int64  // simTruncate: the new size; simAllocate: the size at least
}

type simNode struct {
	dir   bool
	inode *simInode // nil for directories
}

type simDirOpKind uint8

const (
	simLink   simDirOpKind = iota + 1 // name -> node (create, mkdir)
	simUnlink                         // remove name
	simRename                         // name -> newname
)

type simDirOp struct {
	kind    simDirOpKind
	name    string
	newname string
	node    *simNode
}

// SimFS implements FS in memory. Create one with NewSimFS.
type SimFS struct {
	current map[string]*simNode   // what operations see now, by clean name
	durable map[string]*simNode   // what survives any crash
	pending map[string][]simDirOp // directory -> operations since its last SyncDir

	generation uint64 // bumped by Crash; handles of older generations are stale

	opsCount       int64 // mutating operations so far
	haltAtOpsCount int64 // -1: never
	halted         bool

	syncErr             error
	syncErrCountdown    int // syncErr hits the sync this many syncs from now (1: the next)
	misdirectArmed      bool
	misdirectDeltaBytes int64
}

// NewSimFS returns an empty SimFS whose root directory exists.
func NewSimFS() *SimFS {
	root := &simNode{dir: true}
	return &SimFS{
		current:        map[string]*simNode{".": root},
		durable:        map[string]*simNode{".": root},
		pending:        map[string][]simDirOp{},
		haltAtOpsCount: -1,
	}
}

// OpsCount returns how many mutating operations (Create, OpenAppend, Write,
// WriteAt, Sync, Truncate, Allocate, Rename, Remove, MkdirAll, SyncDir)
// have been attempted and carried out so far. Crash-point sweeps use it to number crash points.
func (s *SimFS) OpsCount() int64 { return s.opsCount }

// HaltAfterOps lets n more mutating operations through; the one after them,
// and everything after that, fails with ErrHalted until Crash.
func (s *SimFS) HaltAfterOps(n int64) {
	assertf(n >= 0, "HaltAfterOps(%d)", n)
	s.haltAtOpsCount = s.opsCount + n
}

// Halted reports whether HaltAfterOps has fired.
func (s *SimFS) Halted() bool { return s.halted }

// FailNextSync makes the next File.Sync or SyncDir return err and sync nothing.
func (s *SimFS) FailNextSync(err error) { s.FailNthSync(1, err) }

// FailNthSync makes the n-th File.Sync or SyncDir from now (1: the next)
// return err and sync nothing; the ones before it succeed.
func (s *SimFS) FailNthSync(n int, err error) {
	assertf(err != nil, "FailNthSync(%d, nil)", n)
	assertf(n >= 1, "FailNthSync(%d)", n)
	s.syncErr, s.syncErrCountdown = err, n
}

// takeSyncErr returns the injected error if this sync is the one to fail.
func (s *SimFS) takeSyncErr() error {
	if s.syncErr == nil {
		return nil
	}
	s.syncErrCountdown--
	if s.syncErrCountdown > 0 {
		return nil
	}
	err := s.syncErr
	s.syncErr = nil
	return err
}

// MisdirectNextWrite makes the next Write or WriteAt land offsetDelta bytes
// away from its aim (clamped at offset 0).
func (s *SimFS) MisdirectNextWrite(offsetDelta int64) {
	s.misdirectArmed = true
	s.misdirectDeltaBytes = offsetDelta
}

// beginRead checks that the machine is up. Reads do not count as operations.
func (s *SimFS) beginRead() error {
	if s.halted {
		return ErrHalted
	}
	return nil
}

// beginOp counts one mutating operation, or fails it if the machine halts here.
func (s *SimFS) beginOp() error {
	if s.halted {
		return ErrHalted
	}
	if s.haltAtOpsCount >= 0 && s.opsCount >= s.haltAtOpsCount {
		s.halted = true
		return ErrHalted
	}
	s.opsCount++
	return nil
}

func (s *SimFS) addDirOp(op simDirOp) {
	dir := path.Dir(op.name)
	ops := s.pending[dir]
	assertf(len(ops) < simPendingOpsMax, "directory %s has %d unsynced operations", dir, len(ops))
	s.pending[dir] = append(ops, op)
}

func (s *SimFS) lookupFile(op, name string) (string, *simNode, error) {
	c, err := cleanName(name)
	if err != nil {
		return "", nil, err
	}
	n, ok := s.current[c]
	if !ok {
		return c, nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
	}
	if n.dir {
		return c, nil, &fs.PathError{Op: op, Path: name, Err: errors.New("is a directory")}
	}
	return c, n, nil
}

func (s *SimFS) checkParent(op, c string) error {
	parent, ok := s.current[path.Dir(c)]
	if !ok || !parent.dir {
		return &fs.PathError{Op: op, Path: c, Err: fs.ErrNotExist}
	}
	return nil
}

// Create implements FS.
func (s *SimFS) Create(name string) (File, error) {
	if err := s.beginOp(); err != nil {
		return nil, err
	}
	c, err := cleanName(name)
	if err != nil {
		return nil, err
	}
	if n, ok := s.current[c]; ok {
		if n.dir {
			return nil, &fs.PathError{Op: "create", Path: name, Err: errors.New("is a directory")}
		}
		n.inode.truncate(0)
		return s.newHandle(c, n.inode, true, 0), nil
	}
	if err := s.checkParent("create", c); err != nil {
		return nil, err
	}
	n := &simNode{inode: &simInode{}}
	s.current[c] = n
	s.addDirOp(simDirOp{kind: simLink, name: c, node: n})
	return s.newHandle(c, n.inode, true, 0), nil
}

// Open implements FS.
func (s *SimFS) Open(name string) (File, error) {
	if err := s.beginRead(); err != nil {
		return nil, err
	}
	c, n, err := s.lookupFile("open", name)
	if err != nil {
		return nil, err
	}
	return s.newHandle(c, n.inode, false, 0), nil
}

// OpenAppend implements FS.
func (s *SimFS) OpenAppend(name string) (File, error) {
	if err := s.beginOp(); err != nil {
		return nil, err
	}
	c, n, err := s.lookupFile("open", name)
	if err != nil {
		return nil, err
	}
	return s.newHandle(c, n.inode, true, n.inode.data.sizeBytes), nil
}

// Rename implements FS.
func (s *SimFS) Rename(oldname, newname string) error {
	if err := s.beginOp(); err != nil {
		return err
	}
	oc, n, err := s.lookupFile("rename", oldname)
	if err != nil {
		return err
	}
	nc, err := cleanName(newname)
	if err != nil {
		return err
	}
	if !sameParent(oc, nc) {
		return &fs.PathError{Op: "rename", Path: oldname + " -> " + newname, Err: fs.ErrInvalid}
	}
	if t, ok := s.current[nc]; ok && t.dir {
		return &fs.PathError{Op: "rename", Path: newname, Err: errors.New("is a directory")}
	}
	if oc == nc {
		return nil
	}
	delete(s.current, oc)
	s.current[nc] = n
	s.addDirOp(simDirOp{kind: simRename, name: oc, newname: nc, node: n})
	return nil
}

// Remove implements FS.
func (s *SimFS) Remove(name string) error {
	if err := s.beginOp(); err != nil {
		return err
	}
	c, _, err := s.lookupFile("remove", name)
	if err != nil {
		return err
	}
	delete(s.current, c)
	s.addDirOp(simDirOp{kind: simUnlink, name: c})
	return nil
}

// List implements FS.
func (s *SimFS) List(dir string) ([]string, error) {
	if err := s.beginRead(); err != nil {
		return nil, err
	}
	c, err := cleanName(dir)
	if err != nil {
		return nil, err
	}
	if n, ok := s.current[c]; !ok || !n.dir {
		return nil, &fs.PathError{Op: "list", Path: dir, Err: fs.ErrNotExist}
	}
	var names []string
	for _, name := range slices.Sorted(maps.Keys(s.current)) {
		if name != "." && path.Dir(name) == c {
			names = append(names, path.Base(name))
		}
	}
	return names, nil
}

// MkdirAll implements FS.
func (s *SimFS) MkdirAll(dir string) error {
	if err := s.beginOp(); err != nil {
		return err
	}
	c, err := cleanName(dir)
	if err != nil {
		return err
	}
	var missing []string
	for d, depth := c, 0; d != "."; d, depth = path.Dir(d), depth+1 {
		assertf(depth < pathDepthMax, "directory %q nests deeper than %d", dir, pathDepthMax)
		if n, ok := s.current[d]; ok {
			if !n.dir {
				return &fs.PathError{Op: "mkdir", Path: d, Err: errors.New("not a directory")}
			}
			break
		}
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		n := &simNode{dir: true}
		s.current[missing[i]] = n
		s.addDirOp(simDirOp{kind: simLink, name: missing[i], node: n})
	}
	return nil
}

// SyncDir implements FS.
func (s *SimFS) SyncDir(dir string) error {
	if err := s.beginOp(); err != nil {
		return err
	}
	c, err := cleanName(dir)
	if err != nil {
		return err
	}
	if n, ok := s.current[c]; !ok || !n.dir {
		return &fs.PathError{Op: "syncdir", Path: dir, Err: fs.ErrNotExist}
	}
	if err := s.takeSyncErr(); err != nil {
		return &fs.PathError{Op: "syncdir", Path: dir, Err: err}
	}
	for _, op := range s.pending[c] {
		applyDirOp(s.durable, op)
	}
	delete(s.pending, c)
	return nil
}

// Stat implements FS. Directories have size 0.
func (s *SimFS) Stat(name string) (int64, error) {
	if err := s.beginRead(); err != nil {
		return 0, err
	}
	c, err := cleanName(name)
	if err != nil {
		return 0, err
	}
	n, ok := s.current[c]
	if !ok {
		return 0, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
	}
	if n.dir {
		return 0, nil
	}
	return n.inode.data.sizeBytes, nil
}

func applyDirOp(ns map[string]*simNode, op simDirOp) {
	switch op.kind {
	case simLink:
		ns[op.name] = op.node
	case simUnlink:
		delete(ns, op.name)
	case simRename:
		if ns[op.name] == op.node {
			delete(ns, op.name)
		}
		ns[op.newname] = op.node
	default:
		assertf(false, "unknown directory operation %d", op.kind)
	}
}

// Crash simulates a power loss and restart: every open handle goes stale,
// and what remains is decided by mode and rng (see the type's comment).
func (s *SimFS) Crash(rng *rand.Rand, mode CrashMode) {
	assertf(mode == CrashLoseUnsynced || rng != nil, "Crash(%s) needs an rng", mode)
	// Directories first: each keeps a prefix of its pending operations.
	for _, dir := range slices.Sorted(maps.Keys(s.pending)) {
		ops := s.pending[dir]
		keep := 0
		if mode != CrashLoseUnsynced {
			keep = rng.IntN(len(ops) + 1)
		}
		for _, op := range ops[:keep] {
			applyDirOp(s.durable, op)
		}
	}
	s.pending = map[string][]simDirOp{}
	// Entries whose directory did not survive are gone. Parents sort before
	// their children, so one pass in sorted order sees each parent first.
	for _, name := range slices.Sorted(maps.Keys(s.durable)) {
		if name == "." {
			continue
		}
		if parent, ok := s.durable[path.Dir(name)]; !ok || !parent.dir {
			delete(s.durable, name)
		}
	}
	// Then file contents, in sorted name order so the rng draws replay.
	for _, name := range slices.Sorted(maps.Keys(s.durable)) {
		if n := s.durable[name]; !n.dir {
			n.inode.crash(rng, mode)
		}
	}
	s.current = maps.Clone(s.durable)
	s.generation++
	s.halted = false
	s.haltAtOpsCount = -1
	s.syncErr = nil
	s.misdirectArmed = false
}

// crash replaces the file's contents by what a crash in mode leaves.
func (in *simInode) crash(rng *rand.Rand, mode CrashMode) {
	preCrashSizeBytes := in.data.sizeBytes
	out := in.durable
	if mode != CrashLoseUnsynced && len(in.pending) > 0 {
		whole := rng.IntN(len(in.pending) + 1)
		for _, op := range in.pending[:whole] {
			out = op.apply(out)
		}
		if whole < len(in.pending) {
			if op := in.pending[whole]; op.kind == simWrite && len(op.data) > 0 {
				torn := op
				torn.data = op.data[:rng.IntN(len(op.data))]
				out = torn.apply(out)
			}
		}
		if mode == CrashZeroTail {
			out.sizeBytes = max(out.sizeBytes, preCrashSizeBytes)
		}
	}
	in.durable = out
	in.data = out.clone()
	in.pending = nil
}

// apply returns c with the operation applied (c.written may be reused).
func (op simFileOp) apply(c simContent) simContent {
	switch op.kind {
	case simWrite:
		end := op.offset + int64(len(op.data))
		c.sizeBytes = max(c.sizeBytes, end)
		c.materialize(end)
		copy(c.written[op.offset:], op.data)
	case simTruncate:
		c.written = c.written[:min(int64(len(c.written)), op.sizeBytes)]
		c.sizeBytes = op.sizeBytes
	case simAllocate:
		c.sizeBytes = max(c.sizeBytes, op.sizeBytes)
	default:
		assertf(false, "unknown file operation %d", op.kind)
	}
	return c
}

func (in *simInode) addPending(op simFileOp) {
	if n := len(in.pending); n > 0 && op.kind == simWrite {
		last := &in.pending[n-1]
		if last.kind == simWrite && last.offset+int64(len(last.data)) == op.offset {
			last.data = append(last.data, op.data...)
			return
		}
	}
	assertf(len(in.pending) < simPendingOpsMax, "file has %d unsynced operations", len(in.pending))
	in.pending = append(in.pending, op)
}

func (in *simInode) writeAt(p []byte, offset int64) {
	op := simFileOp{kind: simWrite, offset: offset, data: slices.Clone(p)}
	in.data = op.apply(in.data)
	in.addPending(op)
}

func (in *simInode) truncate(sizeBytes int64) {
	op := simFileOp{kind: simTruncate, sizeBytes: sizeBytes}
	in.data = op.apply(in.data)
	in.addPending(op)
}

// allocate records an allocation only if it grows the file: one that does
// not would change nothing in any crash outcome either, since a crash keeps
// it only with every operation before it, which together give today's size.
func (in *simInode) allocate(sizeBytes int64) {
	if sizeBytes <= in.data.sizeBytes {
		return
	}
	op := simFileOp{kind: simAllocate, sizeBytes: sizeBytes}
	in.data = op.apply(in.data)
	in.addPending(op)
}

func (in *simInode) sync() {
	for _, op := range in.pending {
		in.durable = op.apply(in.durable)
	}
	in.pending = nil
}

// FlipBit flips one bit of a file's written bytes everywhere they are
// stored: in what reads see, in the durable bytes if they hold a written
// byte there, and in any pending write that covers it. Allocated space
// nothing was written to has no bit to flip: a file system reads it as
// zeros whatever the medium holds there.
func (s *SimFS) FlipBit(name string, bitOffset int64) error {
	_, n, err := s.lookupFile("flipbit", name)
	if err != nil {
		return err
	}
	in := n.inode
	byteOffset := bitOffset / 8
	if bitOffset < 0 || byteOffset >= int64(len(in.data.written)) {
		return fmt.Errorf("disk: flip bit %d of %s: file has %d written bytes", bitOffset, name, len(in.data.written))
	}
	mask := byte(1) << (bitOffset % 8)
	in.data.written[byteOffset] ^= mask
	if byteOffset < int64(len(in.durable.written)) {
		in.durable.written[byteOffset] ^= mask
	}
	for _, op := range in.pending {
		if op.kind == simWrite && byteOffset >= op.offset && byteOffset < op.offset+int64(len(op.data)) {
			op.data[byteOffset-op.offset] ^= mask
		}
	}
	return nil
}

// WriteStray writes b into a file gap bytes after its last non-zero byte,
// in what reads see and in the durable contents, as a write that went
// astray onto the medium (or a bit that rotted in unused space) would. The
// file must have no unsynced operations (a crash clears them). It returns
// the offset written.
func (s *SimFS) WriteStray(name string, gapBytes int64, b []byte) (int64, error) {
	_, n, err := s.lookupFile("writestray", name)
	if err != nil {
		return 0, err
	}
	in := n.inode
	if len(in.pending) > 0 || gapBytes < 0 || len(b) == 0 {
		return 0, fmt.Errorf("disk: write stray bytes into %s: %d unsynced operations, gap %d, %d bytes", name, len(in.pending), gapBytes, len(b))
	}
	off := int64(lastNonZeroIndex(in.data.written)+1) + gapBytes
	op := simFileOp{kind: simWrite, offset: off, data: slices.Clone(b)}
	in.data = op.apply(in.data)
	in.durable = op.apply(in.durable.clone())
	return off, nil
}

// FlipRandomBit flips a bit chosen by rng among the written bytes (see
// FlipBit) of a file chosen by rng among those with written bytes whose
// name passes nameFilter (nil: all). ok is false when no file qualifies.
func (s *SimFS) FlipRandomBit(rng *rand.Rand, nameFilter func(string) bool) (name string, bitOffset int64, ok bool) {
	var candidates []string
	for _, c := range slices.Sorted(maps.Keys(s.current)) {
		n := s.current[c]
		if !n.dir && len(n.inode.data.written) > 0 && (nameFilter == nil || nameFilter(c)) {
			candidates = append(candidates, c)
		}
	}
	if len(candidates) == 0 {
		return "", 0, false
	}
	name = candidates[rng.IntN(len(candidates))]
	bitOffset = rng.Int64N(int64(len(s.current[name].inode.data.written)) * 8)
	err := s.FlipBit(name, bitOffset)
	assertf(err == nil, "flip a bit inside %s: %v", name, err)
	return name, bitOffset, true
}

// DurableSize returns the size a file would have after a CrashLoseUnsynced,
// or -1 if its directory entry would not survive one.
func (s *SimFS) DurableSize(name string) int64 {
	c, err := cleanName(name)
	if err != nil {
		return -1
	}
	n, ok := s.durable[c]
	if !ok || n.dir {
		return -1
	}
	return n.inode.durable.sizeBytes
}

// String lists every entry in sorted order with its size now, its durable
// size and whether its directory entry is durable; deterministic, for traces.
func (s *SimFS) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "SimFS generation=%d ops=%d", s.generation, s.opsCount)
	if s.halted {
		b.WriteString(" halted")
	}
	for _, name := range slices.Sorted(maps.Keys(s.current)) {
		if name == "." {
			continue
		}
		n := s.current[name]
		entry := "durable"
		if s.durable[name] != n {
			entry = "unsynced"
		}
		if n.dir {
			fmt.Fprintf(&b, "\n  dir  %s entry=%s", name, entry)
			continue
		}
		fmt.Fprintf(&b, "\n  file %s size=%d written=%d synced=%d pending-ops=%d entry=%s",
			name, n.inode.data.sizeBytes, len(n.inode.data.written), n.inode.durable.sizeBytes, len(n.inode.pending), entry)
	}
	return b.String()
}

type simFile struct {
	fs         *SimFS
	name       string
	inode      *simInode
	generation uint64
	writable   bool
	closed     bool
	offset     int64 // where the next Write is aimed
}

func (s *SimFS) newHandle(name string, in *simInode, writable bool, offset int64) *simFile {
	return &simFile{fs: s, name: name, inode: in, generation: s.generation, writable: writable, offset: offset}
}

func (f *simFile) check(op string) error {
	if f.closed {
		return &fs.PathError{Op: op, Path: f.name, Err: fs.ErrClosed}
	}
	if f.generation != f.fs.generation {
		return &fs.PathError{Op: op, Path: f.name, Err: errStaleHandle}
	}
	return nil
}

func (f *simFile) Write(p []byte) (int, error) {
	n, err := f.write(p, f.offset)
	f.offset += int64(n)
	return n, err
}

func (f *simFile) WriteAt(p []byte, off int64) (int, error) {
	return f.write(p, off)
}

// write lands p at aimedOffset, or elsewhere if a misdirected write is armed.
func (f *simFile) write(p []byte, aimedOffset int64) (int, error) {
	if err := f.fs.beginOp(); err != nil {
		return 0, err
	}
	if err := f.check("write"); err != nil {
		return 0, err
	}
	if !f.writable {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: fs.ErrPermission}
	}
	if aimedOffset < 0 {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: fs.ErrInvalid}
	}
	at := aimedOffset
	if f.fs.misdirectArmed {
		f.fs.misdirectArmed = false
		at = max(0, at+f.fs.misdirectDeltaBytes)
		// The place aimed at keeps its old bytes; past the end it reads zeros.
		if aimedEnd := aimedOffset + int64(len(p)); aimedEnd > f.inode.data.sizeBytes {
			f.inode.truncate(aimedEnd)
		}
	}
	f.inode.writeAt(p, at)
	return len(p), nil
}

func (f *simFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.fs.beginRead(); err != nil {
		return 0, err
	}
	if err := f.check("read"); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrInvalid}
	}
	if off >= f.inode.data.sizeBytes {
		return 0, io.EOF
	}
	n := f.inode.data.readAt(p, off)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *simFile) Sync() error {
	if err := f.fs.beginOp(); err != nil {
		return err
	}
	if err := f.check("sync"); err != nil {
		return err
	}
	if err := f.fs.takeSyncErr(); err != nil {
		return &fs.PathError{Op: "fsync", Path: f.name, Err: err}
	}
	f.inode.sync()
	return nil
}

func (f *simFile) Truncate(sizeBytes int64) error {
	if err := f.fs.beginOp(); err != nil {
		return err
	}
	if err := f.check("truncate"); err != nil {
		return err
	}
	if !f.writable || sizeBytes < 0 {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: fs.ErrInvalid}
	}
	f.inode.truncate(sizeBytes)
	f.offset = min(f.offset, sizeBytes)
	return nil
}

func (f *simFile) Allocate(sizeBytes int64) error {
	if err := f.fs.beginOp(); err != nil {
		return err
	}
	if err := f.check("allocate"); err != nil {
		return err
	}
	if !f.writable || sizeBytes < 0 {
		return &fs.PathError{Op: "allocate", Path: f.name, Err: fs.ErrInvalid}
	}
	f.inode.allocate(sizeBytes)
	return nil
}

func (f *simFile) Close() error {
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.name, Err: fs.ErrClosed}
	}
	f.closed = true
	return nil
}

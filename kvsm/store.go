package kvsm

import (
	"bytes"
	"fmt"
	"math"
	"unsafe"

	"github.com/tidwall/btree"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Config holds the knobs that change what Apply does. Every member must run
// with the same Config: MinLeaseTTLSeconds changes applied state.
type Config struct {
	MaxTxnOps          int   // 0 means 128 (etcd's --max-txn-ops)
	MinLeaseTTLSeconds int64 // grants below are raised to it at apply; 0 = no minimum

	// PlantedAuthSkipTxnCompares is a deliberate bug for the simulator's
	// auth checker: the txn permission check skips the compares. Never set
	// outside tests (node refuses to run production with planted bugs).
	PlantedAuthSkipTxnCompares bool
	// PlantedProgressOvertakesEvents is a deliberate bug for the
	// simulator's watch checkers: a requested progress reply goes out while
	// watchers of the stream are still catching up, so events at or below
	// its revision arrive after it. Never set outside tests.
	PlantedProgressOvertakesEvents bool
}

const (
	// defaultMaxTxnOps is etcd's --max-txn-ops default.
	defaultMaxTxnOps = 128
	// MaxLeaseTTLSeconds is etcd's MaxLeaseTTL: grants above it fail with
	// ErrGRPCLeaseTTLTooLarge.
	MaxLeaseTTLSeconds = 9_000_000_000
	// revOverheadBytes is what SizeBytes charges for one stored revision on
	// top of its key and value: the bbolt key (17 bytes), the marshalled
	// KeyValue framing and the index entry, rounded.
	revOverheadBytes = 64
)

func (c Config) maxTxnOps() int {
	if c.MaxTxnOps <= 0 {
		return defaultMaxTxnOps
	}
	return c.MaxTxnOps
}

// keyRev is one revision of one key: a put or a tombstone. It is never
// changed after it is stored; reads hand its value slice out as-is.
//
// The value is held as a pointer and a 32-bit length rather than a slice,
// which with modSub filling the rest of its word makes a revision 48 bytes
// instead of 64: a key written once then lives in one 96-byte allocation
// (entry and revision, newKeyEntry), not 112. Values are bounded far below
// 4 GiB by the request size limit; setValue checks it.
type keyRev struct {
	valuePtr   *byte  // nil for tombstones; emptyValue for an empty put
	valueLen   uint32 // len of the value
	modSub     int32  // position of this change inside its main revision
	modMain    int64  // main revision of this change
	createMain int64  // main revision that created this generation; 0 for tombstones
	version    int64  // 1 on creation, +1 per put; 0 marks a tombstone
	lease      int64  // lease attached by this put; 0 none
}

// A compile-time check that keyRev stays 48 bytes (the index is out of
// range otherwise).
var _ = [1]struct{}{}[unsafe.Sizeof(keyRev{})-48]

// emptyValue is where an empty value points, so that a put of nothing
// still holds a non-nil (empty) value and a tombstone's nil stays distinct.
var emptyValue byte

// value returns the revision's value: nil for a tombstone, a slice whose
// capacity is its length otherwise (nothing appended to it can reach the
// bytes after it).
func (r *keyRev) value() []byte {
	if r.valuePtr == nil {
		return nil
	}
	return unsafe.Slice(r.valuePtr, r.valueLen)
}

// setValue makes v the revision's value; nil stays nil.
func (r *keyRev) setValue(v []byte) {
	switch {
	case v == nil:
		r.valuePtr, r.valueLen = nil, 0
	case len(v) == 0:
		// Never point at v's array: an empty slice may point just past
		// the end of its allocation, at another object.
		r.valuePtr, r.valueLen = &emptyValue, 0
	default:
		assert(uint64(len(v)) <= math.MaxUint32, "value of %d bytes", len(v))
		r.valuePtr, r.valueLen = unsafe.SliceData(v), uint32(len(v))
	}
}

func (r *keyRev) tombstone() bool { return r.version == 0 }

// before reports whether r sorts before revision (main, sub).
func (r *keyRev) before(main int64, sub int32) bool {
	return r.modMain < main || (r.modMain == main && r.modSub < sub)
}

// keyEntry is one key with its kept history, oldest first. An entry is
// immutable once it is in the key tree: a write stores a successor entry.
// The successor may append to the same backing array (slots past the
// predecessor's length, which no reader of the predecessor ever looks at);
// each entry gets at most one successor, so no slot is written twice.
// Compaction always builds a fresh array.
//
// Invariants (checked by checkInvariants): revs is non-empty, ascending by
// (modMain, modSub); only revs[0] may be at or below the compact revision;
// a tombstone at revs[0] sits exactly at the compact revision; within a
// generation versions count up by one and share createMain.
type keyEntry struct {
	key  []byte
	revs []keyRev
}

// newKeyEntry allocates an entry together with its first revision, which
// saves one allocation per key on the common put-once path.
func newKeyEntry(key []byte, first keyRev) *keyEntry {
	ew := &entryWithFirst{}
	ew.first[0] = first
	ew.e.key = key
	ew.e.revs = ew.first[:]
	return &ew.e
}

func (e *keyEntry) latest() *keyRev { return &e.revs[len(e.revs)-1] }

// live returns the key's current revision if the key exists now.
func (e *keyEntry) live() (*keyRev, bool) {
	r := e.latest()
	return r, !r.tombstone()
}

// at returns the revision visible at main revision atRev: the newest one at
// or below it, unless that is a tombstone.
func (e *keyEntry) at(atRev int64) (*keyRev, bool) {
	i := e.indexAt(atRev)
	if i < 0 || e.revs[i].tombstone() {
		return nil, false
	}
	return &e.revs[i], true
}

// indexAt returns the index of the newest revision with modMain <= atRev,
// or -1.
func (e *keyEntry) indexAt(atRev int64) int {
	lo, hi := 0, len(e.revs) // answer in [lo-1, hi-1]
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if e.revs[mid].modMain <= atRev {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo - 1
}

// find returns the index of revision (main, sub), or -1.
func (e *keyEntry) find(main int64, sub int32) int {
	lo, hi := 0, len(e.revs)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if e.revs[mid].before(main, sub) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(e.revs) && e.revs[lo].modMain == main && e.revs[lo].modSub == sub {
		return lo
	}
	return -1
}

func keyEntryLess(a, b *keyEntry) bool { return bytes.Compare(a.key, b.key) < 0 }

func newKeyTree() *btree.BTreeG[*keyEntry] {
	return btree.NewBTreeGOptions(keyEntryLess, btree.Options{NoLocks: true})
}

// kvState is the readable part of the store: the key tree and the two
// revisions that bound it. Store owns one; a View holds a frozen copy.
type kvState struct {
	keys       *btree.BTreeG[*keyEntry]
	rev        int64 // current revision; 1 on an empty store
	compactRev int64 // 0 if never compacted
	corrupt    bool  // a CORRUPT alarm is active: every request fails
}

// Store is the MVCC state machine. It is single-threaded: every method must
// be called from one goroutine (Views may be read from others).
type Store struct {
	cfg         Config
	kv          kvState
	revLog      revLog
	leases      *btree.BTreeG[*lease]
	nextLeaseID int64 // next candidate for a lease ID the store picks; never reused
	alarms      []*pb.AlarmMember
	auth        *authState // users, roles, permissions; replaced whole on change
	sizeBytes   int64
	watch       watchRegistry
	probe       keyEntry // lookup key for the store's own goroutine; saves an allocation per lookup
	// hint remembers the path of the store's last lookup or write in the
	// key tree: a put looks its key up (twice, with its checks) and then
	// sets it, and with the hint each descent after the first compares
	// about two items a level instead of searching each node. It changes
	// how fast, never what, a lookup finds.
	hint        btree.PathHint
	ownsRequest bool // the request being applied is the store's to keep (ApplyOwned)
}

// New returns an empty store at revision 1.
func New(cfg Config) *Store {
	s := &Store{
		cfg:         cfg,
		kv:          kvState{keys: newKeyTree(), rev: 1},
		leases:      newLeaseTree(),
		nextLeaseID: 1,
		auth:        newAuthState(),
	}
	s.watch.init()
	return s
}

// Rev returns the current revision: 1 on an empty store, +1 per write.
func (s *Store) Rev() int64 { return s.kv.rev }

// CompactRev returns the revision of the last compaction, 0 if none.
func (s *Store) CompactRev() int64 { return s.kv.compactRev }

// SizeBytes estimates the bytes the store holds: every kept revision's key
// and value plus a fixed overhead. It drives Status' dbSize and the quota.
func (s *Store) SizeBytes() int64 { return s.sizeBytes }

func revSizeBytes(key []byte, r *keyRev) int64 {
	return int64(len(key)) + int64(r.valueLen) + revOverheadBytes
}

// lookup returns the entry for key on the store's goroutine.
func (s *Store) lookup(key []byte) *keyEntry {
	s.probe.key = key
	e, _ := s.kv.keys.GetHint(&s.probe, &s.hint)
	s.probe.key = nil
	return e
}

// assert panics when an invariant is broken. Assertions stay on in
// production: a member that continues from a broken state would diverge.
func assert(cond bool, format string, args ...any) {
	if !cond {
		panic("kvsm: assertion failed: " + fmt.Sprintf(format, args...))
	}
}

package etcdformat

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Meta is what an etcd backend holds besides the key history, the leases
// and the alarms (which go to the reader's Sink).
type Meta struct {
	ConsistentIndex uint64
	Term            uint64            // 0 when absent (etcd before 3.5)
	ConfState       *raftpb.ConfState // nil when absent (etcd before 3.5)
	// CompactRev is the revision the history is compacted to: the later of
	// the scheduled and the finished compaction (etcd finishes a scheduled
	// one when it restarts).
	CompactRev     int64
	StorageVersion string // "" when absent (etcd before 3.6)
	ClusterVersion string // "" when absent
	Members        []Member
	Removed        []uint64
	Auth           Auth
}

// Auth is etcd's authentication state: whether auth is on, its revision,
// and the users and roles (passwords as etcd stores them, bcrypt hashes).
type Auth struct {
	Enabled  bool
	Revision uint64
	Users    []*authpb.User
	Roles    []*authpb.Role
}

// Empty reports whether auth is off and no user or role exists.
func (a Auth) Empty() bool { return !a.Enabled && len(a.Users) == 0 && len(a.Roles) == 0 }

// Status is what `etcdutl snapshot status` reports of a file: etcdutl's
// hash (CRC-32C over every bucket name, key and value), the highest
// revision in the key bucket, the number of live keys, the database size
// and the storage version.
type Status struct {
	Hash      uint32 `json:"hash"`
	Revision  int64  `json:"revision"`
	TotalKey  int    `json:"totalKey"`
	TotalSize int64  `json:"totalSize"`
	Version   string `json:"version"`
}

// State is what a read found besides what it handed to the Sink.
type State struct {
	Meta
	// Status is what etcdutl reports; TotalKey is left to the caller, who
	// builds the state and can count its live keys.
	Status Status
	// Format names what the file was: "etcd" (a bbolt database) or
	// "noded-v1" (the format noded's Snapshot RPC sent before it sent
	// etcd's).
	Format string
	// NodedV1 is a noded-v1 file's state: a kvsm snapshot, which the Sink
	// never sees.
	NodedV1 []byte
}

// Revision is one revision of one key as etcd's key bucket holds it: a put
// (Version >= 1) or a tombstone (Version 0, no value, no lease). Key and
// Value alias the database, which bbolt owns only while the read lasts: a
// Sink copies what it keeps. (The fields are kvsm.Revision's, so one
// converts to the other.)
type Revision struct {
	Key       []byte
	Value     []byte
	ModRev    int64
	ModSub    int32
	CreateRev int64
	Version   int64
	Lease     int64
}

// Tombstone reports whether r is a delete.
func (r *Revision) Tombstone() bool { return r.Version == 0 }

// Lease is a granted lease as etcd keeps it.
type Lease struct {
	ID                int64
	GrantedTTLSeconds int64
}

// Sink takes the key history, leases and alarms a read finds, in the
// database's order (revisions ascending).
type Sink interface {
	AddRevision(Revision) error
	// MarkRevision: etcdutl's --bump-revision marks the bumped revision
	// with a key bucket entry of no key.
	MarkRevision(rev int64)
	AddLease(Lease) error
	AddAlarm(memberID uint64, alarm pb.AlarmType) error
}

// ReadOptions tunes reading.
type ReadOptions struct {
	// SkipHashCheck accepts a snapshot file without its sha256 trailer, or
	// whose trailer does not match (etcdutl's --skip-hash-check).
	SkipHashCheck bool
	// LockTimeout is how long ReadDB waits for the lock an etcd member
	// holds on its database while it runs. 0 means one second.
	LockTimeout time.Duration
}

const (
	// hashTrailerBytes is the sha256 etcd appends to a snapshot. A bbolt
	// file is whole pages (a multiple of 512 bytes), so a file 32 bytes
	// past a multiple of 512 carries the trailer.
	hashTrailerBytes = sha256.Size
	sectorBytes      = 512
	// snapshotBytesMax bounds a file this package reads.
	snapshotBytesMax = 1 << 40
	// nodedV1Magic opens the format noded's Snapshot RPC sent before this
	// one: magic, uint64 big-endian length N, N bytes of a kvsm snapshot,
	// zeros up to a multiple of 512 bytes, then the sha256 trailer.
	nodedV1Magic = "NODEDKV1"
)

// HasHashTrailer reports whether a file of this size carries etcd's sha256
// trailer.
func HasHashTrailer(sizeBytes int64) bool { return sizeBytes%sectorBytes == hashTrailerBytes }

// ErrMemberRunning is ReadDB's error when an etcd process holds the
// database's lock.
var ErrMemberRunning = errors.New("the database is locked by another process: is the etcd member still running? Stop every etcd member first")

// ReadSnapshot reads a snapshot file: one etcdctl or etcdutl saved from
// etcd 3.4 to 3.7, one noded's Snapshot RPC sent, or a member's
// member/snap/db copied by hand (no trailer: needs SkipHashCheck). Nothing
// is written.
func ReadSnapshot(path string, opts ReadOptions, sink Sink) (*State, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if size > snapshotBytesMax {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d this reader takes", path, size, int64(snapshotBytesMax))
	}
	dataBytes := size
	if HasHashTrailer(size) {
		dataBytes = size - hashTrailerBytes
		if !opts.SkipHashCheck {
			if err := checkHashTrailer(f, dataBytes); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
		}
	} else if !opts.SkipHashCheck {
		// etcdutl's words.
		return nil, fmt.Errorf("%s: snapshot missing hash but --skip-hash-check=false (a file of %d bytes is not whole 512-byte pages plus a 32-byte sha256: truncated, or not a snapshot)", path, size)
	}
	head := make([]byte, len(nodedV1Magic))
	if n, _ := f.ReadAt(head, 0); n == len(head) && string(head) == nodedV1Magic {
		return readNodedV1(f, dataBytes)
	}
	st, err := readBolt(path, dataBytes, sink, time.Second)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// ReadDB reads an etcd member's database (member/snap/db), refusing with
// ErrMemberRunning while a process holds its lock. Nothing is written.
func ReadDB(path string, opts ReadOptions, sink Sink) (*State, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	st, err := readBolt(path, fi.Size(), sink, timeout)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

func checkHashTrailer(f *os.File, dataBytes int64) error {
	want := make([]byte, hashTrailerBytes)
	if _, err := f.ReadAt(want, dataBytes); err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, dataBytes)); err != nil {
		return err
	}
	if got := h.Sum(nil); !bytes.Equal(got, want) {
		return fmt.Errorf("snapshot hash mismatch: the trailer says sha256 %x, the data hashes to %x (damaged; --skip-hash-check reads it anyway)", want, got)
	}
	return nil
}

func readNodedV1(f *os.File, dataBytes int64) (*State, error) {
	if dataBytes < 16 {
		return nil, errors.New("noded snapshot truncated")
	}
	var lenBuf [8]byte
	if _, err := f.ReadAt(lenBuf[:], 8); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint64(lenBuf[:])
	if n > uint64(dataBytes-16) {
		return nil, fmt.Errorf("noded snapshot says %d bytes of state, the file holds %d", n, dataBytes-16)
	}
	payload := make([]byte, n)
	if _, err := f.ReadAt(payload, 16); err != nil {
		return nil, err
	}
	return &State{Format: "noded-v1", NodedV1: payload, Status: Status{Hash: crc32.Checksum(payload, castagnoli), TotalSize: dataBytes}}, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// guard runs f, turning a panic or a memory fault inside it (bbolt on a
// damaged file) into an error.
func guard(f func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the database is damaged: %v", r)
		}
	}()
	return f()
}

// readBolt reads a bbolt database whose data (without any trailer) is
// dataBytes long.
func readBolt(path string, dataBytes int64, sink Sink, lockTimeout time.Duration) (*State, error) {
	var st *State
	err := guard(func() error {
		db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
		if errors.Is(err, berrors.ErrTimeout) {
			return ErrMemberRunning
		}
		if err != nil {
			return fmt.Errorf("not an etcd database: %w", err)
		}
		defer db.Close()
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return db.View(func(tx *bolt.Tx) error {
			size := tx.Size()
			if size > dataBytes {
				return fmt.Errorf("truncated: the database says it is %d bytes, the file holds %d", size, dataBytes)
			}
			pageSize := db.Info().PageSize
			pages := newPageTree(f, pageSize, uint64(size)/uint64(pageSize))
			root, err := pages.rootOf(uint64(tx.ID()))
			var leaves []uint64
			if err == nil {
				leaves, err = pages.check(root)
			}
			if err == nil {
				err = pages.checkInlineBuckets(leaves)
			}
			if err != nil {
				return fmt.Errorf("the database is damaged: %w", err)
			}
			r := &backendReader{b: sink, h: crc32.New(castagnoli), pages: pages}
			if err := r.read(tx); err != nil {
				return err
			}
			st, err = r.finish(tx.Size())
			return err
		})
	})
	return st, err
}

// backendReader decodes the buckets of one database.
type backendReader struct {
	b                Sink
	h                hash.Hash32
	pages            *pageTree
	meta             Meta
	lastRev          int64
	scheduledCompact int64
	finishedCompact  int64
}

func (r *backendReader) read(tx *bolt.Tx) error {
	c := tx.Cursor()
	for name, v := c.First(); name != nil; name, v = c.Next() {
		if v != nil {
			return fmt.Errorf("top-level key %q is not a bucket", name)
		}
		b := tx.Bucket(name)
		if b == nil {
			return fmt.Errorf("bucket %q cannot be opened", name)
		}
		decode, ok := r.decoder(name)
		if !ok {
			return fmt.Errorf("unknown bucket %q: written by an etcd newer than 3.7, or not etcd's", name)
		}
		if root := uint64(b.Root()); root != 0 { // 0: an inline bucket, a leaf inside its parent
			if _, err := r.pages.check(root); err != nil {
				return fmt.Errorf("the database is damaged: bucket %s: %w", name, err)
			}
		}
		r.h.Write(name)
		err := b.ForEach(func(k, v []byte) error {
			if v == nil {
				return fmt.Errorf("nested bucket %q", k)
			}
			r.h.Write(k)
			r.h.Write(v)
			return decode(k, v)
		})
		if err != nil {
			return fmt.Errorf("bucket %s: %w", name, err)
		}
	}
	return nil
}

func (r *backendReader) decoder(name []byte) (func(k, v []byte) error, bool) {
	switch string(name) {
	case string(bucketKey):
		return r.key, true
	case string(bucketMeta):
		return r.metaKey, true
	case string(bucketLease):
		return r.lease, true
	case string(bucketAlarm):
		return r.alarm, true
	case string(bucketCluster):
		return r.cluster, true
	case string(bucketMembers):
		return r.member, true
	case string(bucketMembersRemoved):
		return r.removed, true
	case string(bucketAuth):
		return r.auth, true
	case string(bucketAuthUsers):
		return r.authUser, true
	case string(bucketAuthRoles):
		return r.authRole, true
	}
	return nil, false
}

func (r *backendReader) key(k, v []byte) error {
	main, sub, tombstone, err := parseRevKey(k)
	if err != nil {
		return err
	}
	if sub > 1<<31-1 {
		return fmt.Errorf("revision %d.%d: sub revision out of range", main, sub)
	}
	r.lastRev = main
	kv, err := decodeKeyValue(v)
	if err != nil {
		return fmt.Errorf("revision %d.%d: %w", main, sub, err)
	}
	if len(kv.Key) == 0 && !tombstone {
		// etcdutl's --bump-revision marks the bumped revision with an
		// empty value: a revision, no key.
		r.b.MarkRevision(main)
		return nil
	}
	rev := Revision{Key: kv.Key, ModRev: main, ModSub: int32(sub)}
	if !tombstone {
		if kv.ModRev != main || kv.Version < 1 {
			return fmt.Errorf("revision %d.%d of key %q says mod revision %d, version %d", main, sub, kv.Key, kv.ModRev, kv.Version)
		}
		rev.Value, rev.CreateRev, rev.Version, rev.Lease = kv.Value, kv.CreateRev, kv.Version, kv.Lease
		if rev.Value == nil {
			rev.Value = []byte{}
		}
	}
	return r.b.AddRevision(rev)
}

// decodeKeyValue decodes mvccpb.KeyValue (key 1, create_revision 2,
// mod_revision 3, version 4, value 5, lease 6) without copying: key and
// value alias v, which bbolt owns only for the transaction. A million of
// them go by in a restore; protobuf's decoder would copy each twice.
func decodeKeyValue(v []byte) (Revision, error) {
	var kv Revision
	err := eachField(v, func(f field) error {
		want := protowire.VarintType
		if f.num == 1 || f.num == 5 {
			want = protowire.BytesType
		}
		if f.num < 1 || f.num > 6 {
			return nil
		}
		if f.typ != want {
			return fmt.Errorf("KeyValue field %d has wire type %d", f.num, f.typ)
		}
		switch f.num {
		case 1:
			kv.Key = f.bytes
		case 2:
			kv.CreateRev = int64(f.varint)
		case 3:
			kv.ModRev = int64(f.varint)
		case 4:
			kv.Version = int64(f.varint)
		case 5:
			kv.Value = f.bytes
		case 6:
			kv.Lease = int64(f.varint)
		}
		return nil
	})
	return kv, err
}

func (r *backendReader) metaKey(k, v []byte) error {
	u64 := func() (uint64, error) {
		if len(v) != 8 {
			return 0, fmt.Errorf("meta %s is %d bytes, want 8", k, len(v))
		}
		return binary.BigEndian.Uint64(v), nil
	}
	compactRev := func() (int64, error) {
		main, _, _, err := parseRevKey(v)
		if err != nil {
			return 0, fmt.Errorf("meta %s: %w", k, err)
		}
		return main, nil
	}
	var err error
	switch string(k) {
	case string(metaConsistentIndex):
		r.meta.ConsistentIndex, err = u64()
	case string(metaTerm):
		r.meta.Term, err = u64()
	case string(metaConfState):
		cs := &raftpb.ConfState{}
		if err = json.Unmarshal(v, cs); err != nil {
			err = fmt.Errorf("meta confState: %w", err)
		}
		r.meta.ConfState = cs
	case string(metaScheduledCompat):
		r.scheduledCompact, err = compactRev()
	case string(metaFinishedCompact):
		r.finishedCompact, err = compactRev()
	case string(metaStorageVersion):
		r.meta.StorageVersion = string(v)
		// etcd writes "" there for one step of an upgrade to 3.6.
		if len(v) > 0 {
			err = checkVersion("storage version", string(v))
		}
	}
	return err
}

// checkVersion refuses a version this reader does not know: newer than
// 3.7, or not 3.x.
func checkVersion(what, v string) error {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return fmt.Errorf("%s %q is not a version", what, v)
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("%s %q is not a version", what, v)
	}
	if major != 3 || minor > 7 {
		return fmt.Errorf("%s %s: written by an etcd this noded does not know (it reads 3.4 to 3.7)", what, v)
	}
	return nil
}

func (r *backendReader) lease(k, v []byte) error {
	if len(k) != 8 {
		return fmt.Errorf("lease key %x is not a lease ID", k)
	}
	id, ttl, _, err := unmarshalLease(v)
	if err != nil {
		return fmt.Errorf("lease %x: %w", k, err)
	}
	if id != int64(binary.BigEndian.Uint64(k)) {
		return fmt.Errorf("lease key %x holds lease %x", k, id)
	}
	return r.b.AddLease(Lease{ID: id, GrantedTTLSeconds: ttl})
}

func (r *backendReader) alarm(k, v []byte) error {
	var a pb.AlarmMember
	if err := proto.Unmarshal(k, &a); err != nil {
		return fmt.Errorf("alarm %x: %w", k, err)
	}
	return r.b.AddAlarm(a.GetMemberID(), a.GetAlarm())
}

func (r *backendReader) cluster(k, v []byte) error {
	switch string(k) {
	case string(clusterVersionKey):
		r.meta.ClusterVersion = string(v)
		return checkVersion("cluster version", string(v))
	case string(clusterDowngrade):
		var d struct {
			Enabled bool   `json:"enabled"`
			Target  string `json:"target-version"`
		}
		if err := json.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("downgrade: %w", err)
		}
		if d.Enabled {
			return fmt.Errorf("a downgrade to %s is in progress: finish or cancel it under etcd first", d.Target)
		}
	}
	return nil
}

func (r *backendReader) member(k, v []byte) error {
	id, err := parseMemberKey(k)
	if err != nil {
		return err
	}
	m, _, err := unmarshalMember(v)
	if err != nil {
		return fmt.Errorf("member %s: %w", k, err)
	}
	if m.ID != id {
		return fmt.Errorf("member key %s holds member %x", k, m.ID)
	}
	r.meta.Members = append(r.meta.Members, m)
	return nil
}

func (r *backendReader) removed(k, v []byte) error {
	id, err := parseMemberKey(k)
	if err != nil {
		return err
	}
	r.meta.Removed = append(r.meta.Removed, id)
	return nil
}

func (r *backendReader) auth(k, v []byte) error {
	switch string(k) {
	case string(authEnabledKey):
		if len(v) != 1 || v[0] > 1 {
			return fmt.Errorf("authEnabled is %x", v)
		}
		r.meta.Auth.Enabled = v[0] == 1
	case string(authRevisionKey):
		if len(v) != 8 {
			return fmt.Errorf("authRevision is %d bytes, want 8", len(v))
		}
		r.meta.Auth.Revision = binary.BigEndian.Uint64(v)
	}
	return nil
}

func (r *backendReader) authUser(k, v []byte) error {
	u := &authpb.User{}
	if err := proto.Unmarshal(v, u); err != nil {
		return fmt.Errorf("user %q: %w", k, err)
	}
	r.meta.Auth.Users = append(r.meta.Auth.Users, u)
	return nil
}

func (r *backendReader) authRole(k, v []byte) error {
	role := &authpb.Role{}
	if err := proto.Unmarshal(v, role); err != nil {
		return fmt.Errorf("role %q: %w", k, err)
	}
	r.meta.Auth.Roles = append(r.meta.Auth.Roles, role)
	return nil
}

func (r *backendReader) finish(sizeBytes int64) (*State, error) {
	r.meta.CompactRev = max(r.scheduledCompact, r.finishedCompact)
	slices.SortFunc(r.meta.Members, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	slices.Sort(r.meta.Removed)
	return &State{Meta: r.meta, Format: "etcd", Status: Status{
		Hash:      r.h.Sum32(),
		Revision:  r.lastRev,
		TotalSize: sizeBytes,
		Version:   r.meta.StorageVersion,
	}}, nil
}

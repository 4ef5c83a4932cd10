package etcdformat

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Source is a member's state to write as etcd's backend.
type Source struct {
	// Revisions calls yield with every kept revision in revision order
	// until yield returns false; CompactRev is the revision the history
	// is compacted to (0: never).
	Revisions  func(yield func(Revision) bool)
	CompactRev int64
	Leases     []Lease
	Alarms     []*pb.AlarmMember
	Members    []Member
	Removed    []uint64
	// ConsistentIndex and Term name the last raft entry the state applied;
	// ConfState is the configuration then.
	ConsistentIndex uint64
	Term            uint64
	ConfState       *raftpb.ConfState
	// SizeHintBytes, when known, is about how large the database will be:
	// it is mapped that large from the start, rather than remapped as it
	// grows.
	SizeHintBytes int64
	// ClusterVersion is the version the cluster runs at ("3.5.0"); the
	// storage version written is its major.minor.0.
	ClusterVersion string
	// Auth is written as given: the auth bucket's enabled flag and
	// revision, a user per key of authUsers, a role per key of authRoles.
	// Zero writes what a new etcd writes (off, no users, no roles).
	Auth Auth
}

// writeBatchRevisions bounds the key bucket writes of one bbolt
// transaction: bbolt holds a transaction's keys and values in memory until
// it commits.
const writeBatchRevisions = 100_000

// writeMmapBytesMax bounds the initial mapping a size hint asks for.
const writeMmapBytesMax = 16 << 30

// arenaChunkBytes is the unit the key bucket's keys and values are
// gathered in for bbolt: a chunk once filled is never moved or reused.
const arenaChunkBytes = 4 << 20

// WriteDB writes src as an etcd backend database at path, which must not
// exist. The file is not synced: callers that keep it sync it (a snapshot
// streamed to a client is read back at once).
func WriteDB(path string, src *Source) error {
	if src.Revisions == nil {
		return errNoRevisions
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("write %s: %w", path, os.ErrExist)
	}
	// As etcd opens its backend on Linux: no freelist written (it is
	// rebuilt on open), which also keeps every commit of a large write
	// from writing a growing list of freed pages.
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoGrowSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
		InitialMmapSize: int(min(max(src.SizeHintBytes, 0)*5/4, writeMmapBytesMax))})
	if err != nil {
		return err
	}
	if err := writeDB(db, src); err != nil {
		db.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return db.Close()
}

func writeDB(db *bolt.DB, src *Source) error {
	if err := db.Update(func(tx *bolt.Tx) error { return writeMeta(tx, src) }); err != nil {
		return err
	}
	tx, err := db.Begin(true)
	if err != nil {
		return err
	}
	defer func() {
		if tx != nil {
			tx.Rollback()
		}
	}()
	inBatch := 0
	var arena []byte
	kv := &mvccpb.KeyValue{}
	marshal := proto.MarshalOptions{Deterministic: true}
	src.Revisions(func(r Revision) bool {
		if inBatch == writeBatchRevisions {
			if err = tx.Commit(); err != nil {
				return false
			}
			if tx, err = db.Begin(true); err != nil {
				tx = nil
				return false
			}
			inBatch, arena = 0, nil
		}
		// bbolt keeps the slices it is given until the commit: each
		// revision's bytes get their own place in the arena, never reused
		// (a full chunk is left to bbolt; a new one is started).
		if need := revBytesLen + 1 + len(r.Key) + len(r.Value) + 64; cap(arena)-len(arena) < need {
			arena = make([]byte, 0, max(arenaChunkBytes, need))
		}
		start := len(arena)
		arena = appendRevKey(arena, r.ModRev, int64(r.ModSub), r.Tombstone())
		keyEnd := len(arena)
		kv.Key, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Value, kv.Lease = r.Key, 0, 0, 0, nil, 0
		if !r.Tombstone() {
			kv.CreateRevision, kv.ModRevision, kv.Version, kv.Value, kv.Lease = r.CreateRev, r.ModRev, r.Version, r.Value, r.Lease
		}
		if arena, err = marshal.MarshalAppend(arena, kv); err != nil {
			return false
		}
		b := tx.Bucket(bucketKey)
		b.FillPercent = 1 // revisions only ever arrive in ascending order
		if err = b.Put(arena[start:keyEnd:keyEnd], arena[keyEnd:len(arena):len(arena)]); err != nil {
			return false
		}
		inBatch++
		return true
	})
	if err != nil {
		return err
	}
	err = tx.Commit()
	tx = nil
	return err
}

func writeMeta(tx *bolt.Tx, src *Source) error {
	buckets := map[string]*bolt.Bucket{}
	for _, name := range allBuckets {
		b, err := tx.CreateBucket(name)
		if err != nil {
			return err
		}
		buckets[string(name)] = b
	}
	put := func(bucket, k, v []byte) error { return buckets[string(bucket)].Put(k, v) }
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	if src.ConsistentIndex > 0 {
		if err := put(bucketMeta, metaConsistentIndex, u64(src.ConsistentIndex)); err != nil {
			return err
		}
	}
	if src.Term > 0 {
		if err := put(bucketMeta, metaTerm, u64(src.Term)); err != nil {
			return err
		}
	}
	if src.ConfState != nil {
		cs, err := json.Marshal(src.ConfState)
		if err != nil {
			return err
		}
		if err := put(bucketMeta, metaConfState, cs); err != nil {
			return err
		}
	}
	if compactRev := src.CompactRev; compactRev > 0 {
		rev := appendRevKey(nil, compactRev, 0, false)
		if err := put(bucketMeta, metaScheduledCompat, rev); err != nil {
			return err
		}
		if err := put(bucketMeta, metaFinishedCompact, rev); err != nil {
			return err
		}
	}
	if src.ClusterVersion != "" {
		v, err := majorMinor(src.ClusterVersion)
		if err != nil {
			return err
		}
		if err := put(bucketMeta, metaStorageVersion, []byte(v)); err != nil {
			return err
		}
		if err := put(bucketCluster, clusterVersionKey, []byte(v)); err != nil {
			return err
		}
	}
	for _, m := range src.Members {
		if err := put(bucketMembers, memberKey(m.ID), marshalMember(m)); err != nil {
			return err
		}
	}
	for _, id := range src.Removed {
		if err := put(bucketMembersRemoved, memberKey(id), removedMarker); err != nil {
			return err
		}
	}
	for _, l := range src.Leases {
		if err := put(bucketLease, binary.BigEndian.AppendUint64(nil, uint64(l.ID)), marshalLease(l.ID, l.GrantedTTLSeconds, 0)); err != nil {
			return err
		}
	}
	for _, a := range src.Alarms {
		k, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
		if err != nil {
			return err
		}
		if err := put(bucketAlarm, k, nil); err != nil {
			return err
		}
	}
	return writeAuth(put, src.Auth)
}

func writeAuth(put func(bucket, k, v []byte) error, a Auth) error {
	enabled := []byte{0}
	if a.Enabled {
		enabled[0] = 1
	}
	if err := put(bucketAuth, authEnabledKey, enabled); err != nil {
		return err
	}
	if a.Revision > 0 {
		if err := put(bucketAuth, authRevisionKey, binary.BigEndian.AppendUint64(nil, a.Revision)); err != nil {
			return err
		}
	}
	for _, u := range a.Users {
		v, err := proto.MarshalOptions{Deterministic: true}.Marshal(u)
		if err != nil {
			return err
		}
		if err := put(bucketAuthUsers, u.GetName(), v); err != nil {
			return err
		}
	}
	for _, r := range a.Roles {
		v, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			return err
		}
		if err := put(bucketAuthRoles, r.GetName(), v); err != nil {
			return err
		}
	}
	return nil
}

// majorMinor turns "3.5.17" into "3.5.0", the form etcd stores versions in.
func majorMinor(v string) (string, error) {
	if err := checkVersion("cluster version", v); err != nil {
		return "", err
	}
	parts := strings.SplitN(v, ".", 3)
	return parts[0] + "." + parts[1] + ".0", nil
}

// CopyWithHashTrailer copies the database at path to w followed by its
// sha256, as etcd sends and saves snapshots, and returns the bytes
// written.
func CopyWithHashTrailer(w io.Writer, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), f)
	if err != nil {
		return n, err
	}
	m, err := w.Write(h.Sum(nil))
	return n + int64(m), err
}

// WriteSnapshotFile writes src as a snapshot file at path (which must not
// exist): the database and its sha256 trailer, synced.
func WriteSnapshotFile(path string, src *Source) error {
	db := path + ".db.tmp"
	os.Remove(db)
	if err := WriteDB(db, src); err != nil {
		return err
	}
	defer os.Remove(db)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := CopyWithHashTrailer(f, db); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

var errNoRevisions = errors.New("etcdformat: source without revisions")

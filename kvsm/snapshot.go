package kvsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/fnv"
	"math"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/encoding/protowire"
)

// Snapshot format, version 1. Every integer is a varint (encoding/binary:
// Uvarint for counts, lengths and revisions; zigzag Varint for lease IDs,
// TTLs and alarm types, which may be negative). The layout is canonical: one
// state has exactly one encoding, which is also what StateHash hashes.
//
//	magic "kvsm-snapshot" version(1)
//	rev compactRev nextLeaseID
//	keyCount { keyLen key revCount { modMain modSub createMain version lease [valueLen value if version > 0] } }
//	leaseCount { id grantedTTLSeconds }
//	alarmCount { memberID alarm }
//	[auth section, only when auth state differs from a new store's (auth.go)]
//	crc32c of everything before, 4 bytes little-endian
//
// Keys ascend, each key's revisions ascend, leases ascend by ID, alarms by
// (member, type). Lease key sets are not stored: they follow from the keys.
const (
	snapshotMagic   = "kvsm-snapshot"
	snapshotVersion = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encoder writes the canonical encoding to a hash, or appends it to buf
// (which the caller sized with a counting pass: a large store's snapshot
// is hundreds of megabytes, and growing a buffer would copy it over and
// over), or only counts it.
type encoder struct {
	w         hash.Hash
	buf       []byte
	sizeBytes int
	countOnly bool // SnapshotSizeBytes: keep nothing
	tmp       [binary.MaxVarintLen64]byte
}

func (e *encoder) write(p []byte) {
	switch {
	case e.w != nil:
		e.w.Write(p)
	case !e.countOnly:
		e.buf = append(e.buf, p...)
	}
	e.sizeBytes += len(p)
}

func (e *encoder) uvarint(v uint64) { e.write(e.tmp[:binary.PutUvarint(e.tmp[:], v)]) }
func (e *encoder) varint(v int64)   { e.write(e.tmp[:binary.PutVarint(e.tmp[:], v)]) }
func (e *encoder) bytes(p []byte)   { e.uvarint(uint64(len(p))); e.write(p) }

func (s *Store) encode(e *encoder) {
	encodeState(e, &s.kv, s.nextLeaseID, s.leases.Len(), func(each func(id, grantedTTLSeconds int64)) {
		s.leases.Scan(func(l *lease) bool {
			each(l.id, l.grantedTTLSeconds)
			return true
		})
	}, s.alarms, s.auth)
}

// encodeState writes the snapshot encoding of a state, live or frozen;
// scanLeases calls each for every lease in ID order.
func encodeState(e *encoder, kv *kvState, nextLeaseID int64, leaseCount int,
	scanLeases func(each func(id, grantedTTLSeconds int64)), alarms []*pb.AlarmMember, auth *authState) {
	e.write([]byte(snapshotMagic))
	e.uvarint(snapshotVersion)
	e.uvarint(uint64(kv.rev))
	e.uvarint(uint64(kv.compactRev))
	e.uvarint(uint64(nextLeaseID))
	e.uvarint(uint64(kv.keys.Len()))
	kv.keys.Scan(func(k *keyEntry) bool {
		e.bytes(k.key)
		e.uvarint(uint64(len(k.revs)))
		for i := range k.revs {
			r := &k.revs[i]
			e.uvarint(uint64(r.modMain))
			e.uvarint(uint64(r.modSub))
			e.uvarint(uint64(r.createMain))
			e.uvarint(uint64(r.version))
			e.varint(r.lease)
			if !r.tombstone() {
				e.bytes(r.value())
			}
		}
		return true
	})
	e.uvarint(uint64(leaseCount))
	scanLeases(func(id, grantedTTLSeconds int64) {
		e.varint(id)
		e.varint(grantedTTLSeconds)
	})
	e.uvarint(uint64(len(alarms)))
	for _, a := range alarms {
		e.uvarint(a.GetMemberID())
		e.varint(int64(a.GetAlarm()))
	}
	auth.encode(e)
}

// Frozen is the replicated state frozen at one moment, for a snapshot
// encoded later, on another goroutine, while the Store goes on applying:
// a View's key-value state and auth, with copies of the leases and alarms
// a View leaves out.
// Freezing costs O(1) for the keys and O(leases + alarms) for the rest;
// encoding a large store takes hundreds of milliseconds that a member's
// loop need not spend.
type Frozen struct {
	view        *View
	nextLeaseID int64
	leases      []frozenLease
	alarms      []*pb.AlarmMember
}

type frozenLease struct{ id, grantedTTLSeconds int64 }

// Freeze returns the current state, frozen.
func (s *Store) Freeze() *Frozen {
	f := &Frozen{view: s.View(), nextLeaseID: s.nextLeaseID, alarms: slices.Clone(s.alarms)}
	f.leases = make([]frozenLease, 0, s.leases.Len())
	s.leases.Scan(func(l *lease) bool {
		f.leases = append(f.leases, frozenLease{l.id, l.grantedTTLSeconds})
		return true
	})
	return f
}

func (f *Frozen) encode(e *encoder) {
	encodeState(e, &f.view.kv, f.nextLeaseID, len(f.leases), func(each func(id, grantedTTLSeconds int64)) {
		for _, l := range f.leases {
			each(l.id, l.grantedTTLSeconds)
		}
	}, f.alarms, f.view.auth)
}

// SnapshotSizeBytes and AppendSnapshot are the Store's, for the frozen
// state: the bytes are those the Store's Snapshot returned when frozen.
func (f *Frozen) SnapshotSizeBytes() int         { return encodedSizeBytes(f.encode) }
func (f *Frozen) AppendSnapshot(b []byte) []byte { return appendEncoded(b, f.encode) }

// Snapshot encodes the whole replicated state: every kept revision of every
// key, the revision and compact revision, leases, alarms and the lease-ID
// counter. Watchers are not state and are not included.
func (s *Store) Snapshot() []byte { return s.AppendSnapshot(make([]byte, 0, s.SnapshotSizeBytes())) }

// SnapshotSizeBytes is the length of Snapshot's bytes, counted without
// keeping them.
func (s *Store) SnapshotSizeBytes() int { return encodedSizeBytes(s.encode) }

// encodedSizeBytes counts what encode writes and its checksum.
func encodedSizeBytes(encode func(*encoder)) int {
	e := &encoder{countOnly: true}
	encode(e)
	return e.sizeBytes + 4
}

// AppendSnapshot appends Snapshot's bytes to b. A caller that sized b
// with SnapshotSizeBytes gets them with no copy beyond the one into b:
// a large store's snapshot is tens of megabytes, and every copy of it is
// memory a member must have room for.
func (s *Store) AppendSnapshot(b []byte) []byte { return appendEncoded(b, s.encode) }

// appendEncoded appends what encode writes and its CRC-32C to b.
func appendEncoded(b []byte, encode func(*encoder)) []byte {
	start := len(b)
	e := &encoder{buf: b}
	encode(e)
	crc := crc32.Checksum(e.buf[start:], castagnoli)
	return binary.LittleEndian.AppendUint32(e.buf, crc)
}

// StateHash hashes everything that is replicated state (FNV-1a 64 over the
// snapshot encoding). Members that applied the same entries agree on it.
func (s *Store) StateHash() uint64 {
	h := fnv.New64a()
	s.encode(&encoder{w: h})
	return h.Sum64()
}

// decoder reads the snapshot encoding. Every length is checked against what
// is left before anything is allocated for it.
type decoder struct {
	data []byte
	err  error
}

var (
	errSnapshotTruncated = errors.New("kvsm: snapshot truncated")
	// errNotCanonical refuses an overlong varint: every state has one
	// encoding, so that a restored snapshot re-encodes to the same bytes.
	errNotCanonical = errors.New("kvsm: snapshot integer not minimally encoded")
)

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.data)
	if n <= 0 {
		d.err = errSnapshotTruncated
		return 0
	}
	if n != protowire.SizeVarint(v) {
		d.err = errNotCanonical
		return 0
	}
	d.data = d.data[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.data)
	if n <= 0 {
		d.err = errSnapshotTruncated
		return 0
	}
	if n != protowire.SizeVarint(protowire.EncodeZigZag(v)) {
		d.err = errNotCanonical
		return 0
	}
	d.data = d.data[n:]
	return v
}

// int63 reads a uvarint that must fit an int64.
func (d *decoder) int63(what string) int64 {
	v := d.uvarint()
	if v > math.MaxInt64 && d.err == nil {
		d.err = fmt.Errorf("kvsm: snapshot %s %d out of range", what, v)
	}
	return int64(v)
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.data)) {
		d.err = errSnapshotTruncated
		return nil
	}
	out := append(make([]byte, 0, n), d.data[:n]...)
	d.data = d.data[n:]
	return out
}

// count reads an element count; each element takes at least minBytes, so a
// count the remaining bytes cannot hold is refused before any loop runs.
func (d *decoder) count(minBytes int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.data)/minBytes) {
		d.err = errSnapshotTruncated
		return 0
	}
	return int(n)
}

// Restore decodes a Snapshot. Arbitrary bytes give an error, never a panic:
// the checksum, every length and every invariant of the state are checked
// before a Store is returned.
func Restore(cfg Config, data []byte) (*Store, error) {
	if len(data) < len(snapshotMagic)+4 {
		return nil, errSnapshotTruncated
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if !bytes.HasPrefix(body, []byte(snapshotMagic)) {
		return nil, errors.New("kvsm: not a kvsm snapshot")
	}
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, errors.New("kvsm: snapshot checksum mismatch")
	}
	return decodeSnapshot(cfg, body[len(snapshotMagic):])
}

// decodeSnapshot decodes the body after the magic. It is separate from the
// checksum so the fuzzer can reach it.
func decodeSnapshot(cfg Config, body []byte) (*Store, error) {
	d := &decoder{data: body}
	if v := d.uvarint(); d.err == nil && v != snapshotVersion {
		return nil, fmt.Errorf("kvsm: snapshot version %d, want %d", v, snapshotVersion)
	}
	s := New(cfg)
	s.kv.rev = d.int63("revision")
	s.kv.compactRev = d.int63("compact revision")
	s.nextLeaseID = d.int63("lease counter")

	if d.err == nil && (s.kv.rev < 1 || s.kv.compactRev > s.kv.rev) {
		return nil, fmt.Errorf("kvsm: snapshot revision %d, compact revision %d", s.kv.rev, s.kv.compactRev)
	}
	var prevKey []byte
	nkeys := d.count(3)
	totalRevs := 0
	for range nkeys {
		key := d.bytes()
		nrevs := d.count(5)
		if d.err != nil {
			break
		}
		var e *keyEntry
		if nrevs == 1 {
			// Most keys hold one revision: entry and revision in one
			// allocation, as a put makes them.
			e = newKeyEntry(key, keyRev{})
			e.revs = e.revs[:0]
		} else {
			e = &keyEntry{key: key, revs: make([]keyRev, 0, nrevs)}
		}
		totalRevs += nrevs
		for range nrevs {
			var r keyRev
			r.modMain = d.int63("mod revision")
			sub := d.uvarint()
			if sub > math.MaxInt32 && d.err == nil {
				d.err = fmt.Errorf("kvsm: snapshot sub revision %d out of range", sub)
			}
			r.modSub = int32(sub)
			r.createMain = d.int63("create revision")
			r.version = d.int63("version")
			r.lease = d.varint()
			if r.version > 0 {
				r.setValue(d.bytes())
			}
			if d.err != nil {
				break
			}
			e.revs = append(e.revs, r)
		}
		if d.err != nil {
			break
		}
		if prevKey != nil && bytes.Compare(prevKey, key) >= 0 {
			return nil, fmt.Errorf("kvsm: snapshot keys out of order at %q", key)
		}
		prevKey = key
		if err := s.checkKey(e); err != nil {
			return nil, err
		}
		// Keys come in ascending order (checked above): Load appends to
		// the tree's last leaf instead of searching from the root.
		s.kv.keys.Load(e)
	}
	nleases := d.count(2)
	for range nleases {
		id, ttl := d.varint(), d.varint()
		if d.err != nil {
			break
		}
		if m, ok := s.leases.Max(); ok && m.id >= id {
			return nil, fmt.Errorf("kvsm: snapshot leases out of order at %d", id)
		}
		s.leases.Set(newLease(id, ttl))
	}
	nalarms := d.count(2)
	for range nalarms {
		member, alarm := d.uvarint(), d.varint()
		if d.err == nil && (alarm < math.MinInt32 || alarm > math.MaxInt32) {
			d.err = fmt.Errorf("kvsm: snapshot alarm type %d out of range", alarm)
		}
		if d.err != nil {
			break
		}
		s.alarms = append(s.alarms, &pb.AlarmMember{MemberID: member, Alarm: pb.AlarmType(alarm)})
	}
	if d.err == nil && len(d.data) != 0 {
		auth, err := decodeAuth(d)
		if err != nil {
			return nil, err
		}
		s.auth = auth
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.data) != 0 {
		return nil, fmt.Errorf("kvsm: %d bytes after the snapshot", len(d.data))
	}
	if err := s.rebuildDerived(totalRevs); err != nil {
		return nil, err
	}
	if err := s.checkInvariants(); err != nil {
		return nil, err
	}
	return s, nil
}

// rebuildDerived rebuilds what the snapshot leaves out: the revision log,
// lease attachments, the size estimate and the corrupt flag. It checks what
// it relies on.
func (s *Store) rebuildDerived(revsHint int) error {
	entries := make([]revLogEntry, 0, revsHint)
	var err error
	s.kv.keys.Scan(func(e *keyEntry) bool {
		for i := range e.revs {
			r := &e.revs[i]
			if r.modMain >= s.kv.compactRev {
				entries = append(entries, revLogEntry{main: r.modMain, sub: r.modSub, key: e.key})
			}
			s.sizeBytes += revSizeBytes(e.key, r)
		}
		if cur, ok := e.live(); ok && cur.lease != 0 {
			l := s.getLease(cur.lease)
			if l == nil {
				err = fmt.Errorf("kvsm: key %q is attached to missing lease %d", e.key, cur.lease)
				return false
			}
			l.keys.Set(e.key)
		}
		return true
	})
	if err != nil {
		return err
	}
	entries = sortRevLogEntries(entries)
	for i := range entries {
		if i > 0 && !entries[i-1].before(entries[i].main, entries[i].sub) {
			return fmt.Errorf("kvsm: revision %d.%d appears twice", entries[i].main, entries[i].sub)
		}
		s.revLog.append(entries[i])
	}
	s.kv.corrupt = s.alarmActive(pb.AlarmType_CORRUPT)
	return nil
}

// checkInvariants verifies the state's invariants and returns the first
// broken one. Restore runs it on every snapshot; tests run it after every
// step.
func (s *Store) checkInvariants() error {
	kv := &s.kv
	if kv.rev < 1 {
		return fmt.Errorf("kvsm: revision %d < 1", kv.rev)
	}
	if kv.compactRev < 0 || kv.compactRev > kv.rev {
		return fmt.Errorf("kvsm: compact revision %d outside [0, %d]", kv.compactRev, kv.rev)
	}
	if s.nextLeaseID < 1 {
		return fmt.Errorf("kvsm: lease counter %d < 1", s.nextLeaseID)
	}
	var err error
	var prev []byte
	nrevs := 0
	kv.keys.Scan(func(e *keyEntry) bool {
		if len(e.key) == 0 {
			err = errors.New("kvsm: empty key")
			return false
		}
		if prev != nil && bytes.Compare(prev, e.key) >= 0 {
			err = fmt.Errorf("kvsm: keys out of order at %q", e.key)
			return false
		}
		prev = e.key
		if err = s.checkKey(e); err != nil {
			return false
		}
		for i := range e.revs {
			if e.revs[i].modMain >= kv.compactRev {
				nrevs++
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	if nrevs != s.revLog.len() {
		return fmt.Errorf("kvsm: %d revisions at or above the compact revision in keys, %d in the revision log", nrevs, s.revLog.len())
	}
	attached := 0
	s.leases.Scan(func(l *lease) bool {
		if l.id == 0 {
			err = errors.New("kvsm: lease with ID 0")
			return false
		}
		l.keys.Scan(func(k []byte) bool {
			e := s.lookup(k)
			if e == nil {
				err = fmt.Errorf("kvsm: lease %d holds missing key %q", l.id, k)
				return false
			}
			if cur, ok := e.live(); !ok || cur.lease != l.id {
				err = fmt.Errorf("kvsm: lease %d holds key %q that is not attached to it", l.id, k)
				return false
			}
			attached++
			return true
		})
		return err == nil
	})
	if err != nil {
		return err
	}
	leased := 0
	kv.keys.Scan(func(e *keyEntry) bool {
		if cur, ok := e.live(); ok && cur.lease != 0 {
			leased++
		}
		return true
	})
	if leased != attached {
		return fmt.Errorf("kvsm: %d leased keys but %d lease attachments", leased, attached)
	}
	for i, a := range s.alarms {
		if a.GetAlarm() == pb.AlarmType_NONE {
			return errors.New("kvsm: alarm of type NONE")
		}
		if i > 0 && compareAlarm(s.alarms[i-1], a) >= 0 {
			return errors.New("kvsm: alarms out of order")
		}
	}
	if kv.corrupt != s.alarmActive(pb.AlarmType_CORRUPT) {
		return errors.New("kvsm: corrupt flag disagrees with alarms")
	}
	return s.auth.checkInvariants()
}

// checkKey verifies one key's history.
func (s *Store) checkKey(e *keyEntry) error {
	kv := &s.kv
	if len(e.revs) == 0 {
		return fmt.Errorf("kvsm: key %q has no revisions", e.key)
	}
	for i := range e.revs {
		r := &e.revs[i]
		switch {
		case r.modMain < 1 || r.modMain > kv.rev:
			return fmt.Errorf("kvsm: key %q revision %d outside [1, %d]", e.key, r.modMain, kv.rev)
		case r.modSub < 0:
			return fmt.Errorf("kvsm: key %q negative sub revision", e.key)
		case i > 0 && !e.revs[i-1].before(r.modMain, r.modSub):
			return fmt.Errorf("kvsm: key %q revisions out of order", e.key)
		case i > 0 && r.modMain <= kv.compactRev:
			return fmt.Errorf("kvsm: key %q keeps compacted revision %d", e.key, r.modMain)
		}
		if r.tombstone() {
			switch {
			case r.valuePtr != nil || r.lease != 0 || r.createMain != 0:
				return fmt.Errorf("kvsm: key %q tombstone %d carries data", e.key, r.modMain)
			case i == 0 && r.modMain != kv.compactRev:
				return fmt.Errorf("kvsm: key %q history starts with a tombstone at %d, compacted at %d", e.key, r.modMain, kv.compactRev)
			case i > 0 && e.revs[i-1].tombstone():
				return fmt.Errorf("kvsm: key %q deleted twice", e.key)
			}
			continue
		}
		switch {
		case r.valuePtr == nil:
			return fmt.Errorf("kvsm: key %q put %d without a value slice", e.key, r.modMain)
		case r.createMain < 1 || r.createMain > r.modMain:
			return fmt.Errorf("kvsm: key %q create revision %d outside [1, %d]", e.key, r.createMain, r.modMain)
		case (r.version == 1) != (r.createMain == r.modMain):
			return fmt.Errorf("kvsm: key %q version %d with create %d mod %d", e.key, r.version, r.createMain, r.modMain)
		case i > 0 && e.revs[i-1].tombstone() && r.version != 1:
			return fmt.Errorf("kvsm: key %q re-created at version %d", e.key, r.version)
		case i > 0 && !e.revs[i-1].tombstone() && (r.version != e.revs[i-1].version+1 || r.createMain != e.revs[i-1].createMain):
			return fmt.Errorf("kvsm: key %q version %d after %d", e.key, r.version, e.revs[i-1].version)
		case i == 0 && r.modMain > kv.compactRev && r.version != 1:
			return fmt.Errorf("kvsm: key %q first kept version %d has no kept creation", e.key, r.version)
		}
	}
	return nil
}

// HashKV hashes the kept history up to rev (0 or less: the current revision)
// exactly as etcd's HashKV does: crc32c over the bucket name "key", then
// each revision's 17-byte bucket key (main, '_', sub, plus 't' for a
// tombstone) and its marshalled KeyValue, in revision order. Revisions at or
// below the compact revision count only if they are what a compaction at rev
// would keep, and a tombstone at the compact revision never counts, so
// members that compacted at different times agree.
func (s *Store) HashKV(rev int64) (hash uint32, hashRev int64, compactRev int64, err error) {
	return s.kv.hashKV(rev)
}

func (kv *kvState) hashKV(rev int64) (uint32, int64, int64, error) {
	if rev > 0 && rev < kv.compactRev {
		return 0, 0, kv.compactRev, rpctypes.ErrGRPCCompacted
	}
	if rev > kv.rev {
		return 0, 0, kv.compactRev, rpctypes.ErrGRPCFutureRev
	}
	if rev <= 0 {
		rev = kv.rev
	}
	refs := kv.revisionOrder(rev, func(e *keyEntry, i, newest int) bool {
		r := &e.revs[i]
		return r.modMain > kv.compactRev || (i == newest && !r.tombstone())
	})
	h := crc32.New(castagnoli)
	h.Write([]byte("key"))
	var buf []byte
	for _, ref := range refs {
		buf = buf[:0]
		buf = binary.BigEndian.AppendUint64(buf, uint64(ref.rev.modMain))
		buf = append(buf, '_')
		buf = binary.BigEndian.AppendUint64(buf, uint64(ref.rev.modSub))
		if ref.rev.tombstone() {
			buf = append(buf, 't')
		}
		h.Write(buf)
		buf = appendKeyValue(buf[:0], ref.key, ref.rev)
		h.Write(buf)
	}
	return h.Sum32(), rev, kv.compactRev, nil
}

// appendKeyValue appends the protobuf encoding of mvccpb.KeyValue as etcd
// stores it: fields in number order, zero values left out; a tombstone is
// just the key.
func appendKeyValue(buf []byte, key []byte, r *keyRev) []byte {
	field := func(buf []byte, num int, v int64) []byte {
		if v == 0 {
			return buf
		}
		buf = binary.AppendUvarint(buf, uint64(num)<<3)
		return binary.AppendUvarint(buf, uint64(v))
	}
	bytesField := func(buf []byte, num int, p []byte) []byte {
		if len(p) == 0 {
			return buf
		}
		buf = binary.AppendUvarint(buf, uint64(num)<<3|2)
		buf = binary.AppendUvarint(buf, uint64(len(p)))
		return append(buf, p...)
	}
	buf = bytesField(buf, 1, key)
	if r.tombstone() {
		return buf
	}
	buf = field(buf, 2, r.createMain)
	buf = field(buf, 3, r.modMain)
	buf = field(buf, 4, r.version)
	buf = bytesField(buf, 5, r.value())
	return field(buf, 6, r.lease)
}

// Replace swaps the store's state for a snapshot's (a member installing a
// snapshot from its leader), keeping the same Store and its watchers. As in
// etcd's watchable store restore, every watcher becomes unsynced at its next
// revision and catches up from the new history in WatchPoll, or is
// cancelled there if that revision is compacted. On error nothing changes.
func (s *Store) Replace(data []byte) error {
	fresh, err := Restore(s.cfg, data)
	if err != nil {
		return err
	}
	reg := &s.watch
	var synced []*watcher
	reg.streams.Scan(func(st *watchStream) bool {
		st.watchers.Scan(func(w *watcher) bool {
			if w.synced {
				synced = append(synced, w)
			}
			return true
		})
		return true
	})
	for _, w := range synced {
		reg.makeUnsynced(w, max(w.nextRev, s.kv.rev+1))
	}
	s.kv = fresh.kv
	s.revLog = fresh.revLog
	s.leases = fresh.leases
	s.nextLeaseID = fresh.nextLeaseID
	s.alarms = fresh.alarms
	s.auth = fresh.auth
	s.sizeBytes = fresh.sizeBytes
	return nil
}

// CheckInvariants verifies every invariant of the store's state (key
// histories, revision log, lease attachments, alarms) and returns the first
// broken one. It walks everything: for tests, fuzzers and the simulator,
// not for every apply in production.
func (s *Store) CheckInvariants() error { return s.checkInvariants() }

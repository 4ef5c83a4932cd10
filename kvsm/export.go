package kvsm

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/tidwall/btree"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// Moving a state between stores of other formats (etcd's backend): the
// state as plain revisions, out of a View and into a Builder. The key
// history, the revision, the compact revision, leases and alarms are what
// etcd's backend holds too; the lease-ID counter is not, and a built store
// starts it at 1, so that every member that builds the same state agrees.

// Revision is one kept revision of one key as etcd's backend stores it: a
// put (Version >= 1) or a tombstone (Version 0, no value, no lease).
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

func (r *Revision) String() string {
	if r.Tombstone() {
		return fmt.Sprintf("%d.%d delete %q", r.ModRev, r.ModSub, r.Key)
	}
	return fmt.Sprintf("%d.%d put %q create=%d version=%d lease=%d value=%dB", r.ModRev, r.ModSub, r.Key, r.CreateRev, r.Version, r.Lease, len(r.Value))
}

func exportRevision(key []byte, r *keyRev) Revision {
	return Revision{Key: key, Value: r.value(), ModRev: r.modMain, ModSub: r.modSub, CreateRev: r.createMain, Version: r.version, Lease: r.lease}
}

// ScanRevisions calls fn with every kept revision of the view in revision
// order ((ModRev, ModSub) ascending, the order of etcd's key bucket) until
// fn returns false. Key and value bytes are the store's: read-only.
func (v *View) ScanRevisions(fn func(r Revision) bool) {
	refs := v.kv.revisionOrder(v.kv.rev, func(*keyEntry, int, int) bool { return true })
	for _, ref := range refs {
		if !fn(exportRevision(ref.key, ref.rev)) {
			return
		}
	}
}

// revisionOrder collects the revisions of every key up to upTo that keep
// accepts (given the entry, the revision's index and the index of the
// key's newest revision at or below upTo) and sorts them by revision.
func (kv *kvState) revisionOrder(upTo int64, keep func(e *keyEntry, i, newest int) bool) []kvRef {
	byKey := make([]kvRef, 0, kv.keys.Len()) // at least one revision a key
	kv.keys.Scan(func(e *keyEntry) bool {
		newest := e.indexAt(upTo)
		for i := 0; i <= newest; i++ {
			if keep(e, i, newest) {
				byKey = append(byKey, kvRef{key: e.key, rev: &e.revs[i]})
			}
		}
		return true
	})
	// Sorting the revisions themselves, small and pointer-free, then
	// placing the references: a million references compared through
	// their pointers sort several times slower.
	type position struct {
		main int64
		sub  int32
		at   int32
	}
	assert(len(byKey) <= math.MaxInt32, "%d revisions to order", len(byKey))
	order := make([]position, len(byKey))
	for i, ref := range byKey {
		order[i] = position{main: ref.rev.modMain, sub: ref.rev.modSub, at: int32(i)}
	}
	slices.SortFunc(order, func(a, b position) int {
		if a.main != b.main {
			return cmp.Compare(a.main, b.main)
		}
		return cmp.Compare(a.sub, b.sub)
	})
	refs := make([]kvRef, len(order))
	for i, p := range order {
		refs[i] = byKey[p.at]
	}
	return refs
}

// compactFrom returns the index of the first revision of revs that a
// compaction at atRev keeps: the newest at or below atRev stays (the state
// a read at atRev sees) unless it is a tombstone older than atRev (a
// tombstone exactly at atRev stays, as in etcd since 3.5.16, so a watch
// from atRev still sees the delete); everything after it stays.
func compactFrom(revs []keyRev, i int, atRev int64) int {
	if i < 0 {
		return 0
	}
	if r := &revs[i]; r.tombstone() && r.modMain < atRev {
		return i + 1
	}
	return i
}

// Builder assembles a Store from a state kept elsewhere (etcd's backend),
// revision by revision. Revisions may come in any order; Build sorts each
// key's history, drops what a compaction at the compact revision would
// have dropped (a backend whose compaction had not finished still holds
// some), and checks every invariant Restore checks.
type Builder struct {
	cfg    Config
	keys   *btree.BTreeG[*keyEntry] // entries under construction: revs unsorted
	probe  keyEntry
	hint   btree.PathHint // keys often arrive in order: each search starts where the last ended
	leases *btree.BTreeG[*lease]
	alarms []*pb.AlarmMember
	maxRev int64      // highest revision seen, of a key or a marker
	auth   *authState // SetAuth's; nil: none
	err    error
}

// NewBuilder returns an empty Builder.
func NewBuilder(cfg Config) *Builder {
	return &Builder{cfg: cfg, keys: newKeyTree(), leases: newLeaseTree(), maxRev: 1}
}

// AddRevision adds one revision of one key. Its bytes are copied.
func (b *Builder) AddRevision(r Revision) error {
	if b.err != nil {
		return b.err
	}
	switch {
	case len(r.Key) == 0:
		b.err = fmt.Errorf("kvsm: revision %d.%d has an empty key", r.ModRev, r.ModSub)
	case r.ModRev < 1 || r.ModSub < 0:
		b.err = fmt.Errorf("kvsm: key %q has revision %d.%d", r.Key, r.ModRev, r.ModSub)
	case r.Version < 0:
		b.err = fmt.Errorf("kvsm: key %q revision %d.%d has version %d", r.Key, r.ModRev, r.ModSub, r.Version)
	}
	if b.err != nil {
		return b.err
	}
	kr := keyRev{modMain: r.ModRev, modSub: r.ModSub, version: r.Version}
	if !r.Tombstone() {
		kr.setValue(append(make([]byte, 0, len(r.Value)), r.Value...))
		kr.createMain, kr.lease = r.CreateRev, r.Lease
	}
	b.probe.key = r.Key
	e, ok := b.keys.GetHint(&b.probe, &b.hint)
	b.probe.key = nil
	if !ok {
		b.keys.SetHint(newKeyEntry(bytes.Clone(r.Key), kr), &b.hint)
	} else {
		e.revs = append(e.revs, kr)
	}
	b.maxRev = max(b.maxRev, r.ModRev)
	return nil
}

// MarkRevision raises the store's revision to at least rev without a key:
// etcd's backend marks a revision bumped by a restore so.
func (b *Builder) MarkRevision(rev int64) {
	b.maxRev = max(b.maxRev, rev)
}

// AddLease adds a granted lease.
func (b *Builder) AddLease(id, grantedTTLSeconds int64) error {
	if b.err != nil {
		return b.err
	}
	if id == 0 {
		b.err = fmt.Errorf("kvsm: lease with ID 0")
		return b.err
	}
	if _, dup := b.leases.Get(&lease{id: id}); dup {
		b.err = fmt.Errorf("kvsm: lease %d appears twice", id)
		return b.err
	}
	b.leases.Set(newLease(id, grantedTTLSeconds))
	return nil
}

// AddAlarm adds an active alarm.
func (b *Builder) AddAlarm(memberID uint64, alarm pb.AlarmType) error {
	if b.err != nil {
		return b.err
	}
	if alarm == pb.AlarmType_NONE || pb.AlarmType_name[int32(alarm)] == "" {
		b.err = fmt.Errorf("kvsm: alarm of type %d", alarm)
		return b.err
	}
	b.alarms = append(b.alarms, &pb.AlarmMember{MemberID: memberID, Alarm: alarm})
	return nil
}

// Build returns the store: its revision is the highest of rev, every
// revision added or marked, and compactRev, as etcd's backend restores it.
// The Builder is spent.
func (b *Builder) Build(rev, compactRev int64) (*Store, error) {
	if b.err != nil {
		return nil, b.err
	}
	b.err = fmt.Errorf("kvsm: builder already built")
	if compactRev < 0 {
		return nil, fmt.Errorf("kvsm: compact revision %d", compactRev)
	}
	s := New(b.cfg)
	s.kv.rev = max(rev, b.maxRev, compactRev)
	s.kv.compactRev = compactRev
	var err error
	totalRevs := 0
	b.keys.Scan(func(e *keyEntry) bool {
		slices.SortFunc(e.revs, func(x, y keyRev) int {
			switch {
			case x.before(y.modMain, y.modSub):
				return -1
			case y.before(x.modMain, x.modSub):
				return 1
			}
			err = fmt.Errorf("kvsm: key %q has revision %d.%d twice", e.key, x.modMain, x.modSub)
			return 0
		})
		if err != nil {
			return false
		}
		if from := compactFrom(e.revs, e.indexAt(compactRev), compactRev); from > 0 {
			e.revs = slices.Clone(e.revs[from:])
		}
		if len(e.revs) == 0 {
			return true
		}
		s.kv.keys.Set(e) // checked with everything else below
		totalRevs += len(e.revs)
		return true
	})
	if err != nil {
		return nil, err
	}
	s.leases = b.leases
	slices.SortFunc(b.alarms, compareAlarm)
	for i, a := range b.alarms {
		if i > 0 && compareAlarm(b.alarms[i-1], a) == 0 {
			return nil, fmt.Errorf("kvsm: alarm %v of member %x appears twice", a.GetAlarm(), a.GetMemberID())
		}
	}
	s.alarms = b.alarms
	if b.auth != nil {
		s.auth = b.auth
	}
	if err := s.rebuildDerived(totalRevs); err != nil {
		return nil, err
	}
	if err := s.checkInvariants(); err != nil {
		return nil, err
	}
	return s, nil
}

// Bump raises the revision by `by` without writing a key, and with compact
// also compacts the history at the new revision: what
// `etcdutl snapshot restore --bump-revision --mark-compacted` does to a
// restored backend, so that clients that watched or read the old cluster
// never see a revision go backwards, and every old revision reads as
// compacted.
func (s *Store) Bump(by int64, compact bool) error {
	if by < 0 || s.kv.rev > math.MaxInt64-by {
		return fmt.Errorf("kvsm: bump revision %d by %d", s.kv.rev, by)
	}
	s.kv.rev += by
	if compact && s.kv.rev > s.kv.compactRev {
		s.compact(s.kv.rev)
	}
	return s.checkInvariants()
}

// AuthExport is the auth state as etcd's backend keeps it: whether auth
// is on, its revision, and every user and role, in name order.
type AuthExport struct {
	Enabled  bool
	Revision uint64
	Users    []*authpb.User
	Roles    []*authpb.Role
}

// Empty reports whether auth is off and there is no user and no role: the
// state of a store that never used auth.
func (a AuthExport) Empty() bool { return !a.Enabled && len(a.Users) == 0 && len(a.Roles) == 0 }

// Auth returns the view's auth state; its users and roles are copies.
func (v *View) Auth() AuthExport {
	a := v.auth
	out := AuthExport{Enabled: a.enabled, Revision: a.revision}
	for _, name := range slices.Sorted(maps.Keys(a.users)) {
		out.Users = append(out.Users, proto.CloneOf(a.users[name]))
	}
	for _, name := range slices.Sorted(maps.Keys(a.roles)) {
		out.Roles = append(out.Roles, proto.CloneOf(a.roles[name]))
	}
	return out
}

// SetAuth gives the store Build makes this auth state (copied). Build
// checks it as Restore checks a snapshot's: names, sorted roles and
// permissions, valid ranges, a root user when auth is on.
func (b *Builder) SetAuth(a AuthExport) error {
	st := newAuthState()
	st.enabled = a.Enabled
	if a.Revision > 0 {
		st.revision = a.Revision
	}
	for _, u := range a.Users {
		if _, dup := st.users[string(u.GetName())]; dup || len(u.GetName()) == 0 {
			return fmt.Errorf("kvsm: auth user %q appears twice or has no name", u.GetName())
		}
		st.users[string(u.GetName())] = proto.CloneOf(u)
	}
	for _, r := range a.Roles {
		if _, dup := st.roles[string(r.GetName())]; dup || len(r.GetName()) == 0 {
			return fmt.Errorf("kvsm: auth role %q appears twice or has no name", r.GetName())
		}
		st.roles[string(r.GetName())] = proto.CloneOf(r)
	}
	st.derive()
	b.auth = st
	return nil
}

package linearizability

import (
	"fmt"
	"sort"
	"strings"
)

// keyValue is one live key as the model holds it. Its fields mirror
// mvccpb.KeyValue.
type keyValue struct {
	key            string
	value          string
	createRevision int64
	modRevision    int64
	version        int64
	lease          int64
}

func (kv keyValue) String() string {
	s := fmt.Sprintf("%s=%s@%d(create %d, v%d", quote(kv.key), quote(kv.value), kv.modRevision, kv.createRevision, kv.version)
	if kv.lease != 0 {
		s += fmt.Sprintf(", lease %d", kv.lease)
	}
	return s + ")"
}

// state is the model's view of the store at one point: what a current-state
// read can see, plus what decides errors (compaction, leases). A state is
// never changed once built: every step that writes returns a new one, so
// porcupine may keep any number of them. keys and leases are sorted and
// never shared with a state that is still being built.
//
// History (older revisions) is not part of the state; reads at a past
// revision are answered from the replay of the committed log.
type state struct {
	revision int64
	// compactRevision is the revision last compacted at, 0 before any
	// compaction (as kvsm keeps it; etcd starts its compactMainRev at -1,
	// which differs only in refusing a compaction at revision 0).
	compactRevision int64
	keys            []keyValue // live keys, ascending by key
	leases          []int64    // live lease IDs, ascending
	// nextLeaseID is where the store starts looking for an ID when a grant
	// leaves the choice to it (see apply).
	nextLeaseID int64
	// contentHash is the XOR of hashKeyValue over keys and hashLease over
	// leases, kept up to date by every write so Hash costs nothing.
	contentHash uint64
}

func initialState() *state {
	// etcd's revision is 1 on an empty store.
	return &state{revision: 1, nextLeaseID: 1}
}

// find returns the position of key in keys and whether it is there.
func (s *state) find(key string) (int, bool) {
	i := sort.Search(len(s.keys), func(i int) bool { return s.keys[i].key >= key })
	return i, i < len(s.keys) && s.keys[i].key == key
}

func (s *state) get(key string) (keyValue, bool) {
	i, ok := s.find(key)
	if !ok {
		return keyValue{}, false
	}
	return s.keys[i], true
}

// inRange returns the live keys in r, ascending. The slice aliases s.keys:
// callers must not change it.
func (s *state) inRange(r keyRange) []keyValue {
	if r.shape == shapeKey {
		i, ok := s.find(r.start)
		if !ok {
			return nil
		}
		return s.keys[i : i+1]
	}
	i, _ := s.find(r.start)
	j := i
	for j < len(s.keys) && !r.beyond(s.keys[j].key) {
		j++
	}
	return s.keys[i:j]
}

func (s *state) hasLease(id int64) bool {
	i := sort.Search(len(s.leases), func(i int) bool { return s.leases[i] >= id })
	return i < len(s.leases) && s.leases[i] == id
}

// clone returns a copy whose slices may be written.
func (s *state) clone() *state {
	c := *s
	c.keys = append(make([]keyValue, 0, len(s.keys)+1), s.keys...)
	c.leases = append([]int64(nil), s.leases...)
	return &c
}

// set inserts or replaces kv. Only for a state from clone that is still
// being built.
func (s *state) set(kv keyValue) {
	i, ok := s.find(kv.key)
	if ok {
		s.contentHash ^= hashKeyValue(s.keys[i])
		s.keys[i] = kv
	} else {
		s.keys = append(s.keys, keyValue{})
		copy(s.keys[i+1:], s.keys[i:])
		s.keys[i] = kv
	}
	s.contentHash ^= hashKeyValue(kv)
}

// remove deletes key. Only for a state from clone that is still being built.
func (s *state) remove(key string) {
	i, ok := s.find(key)
	if !ok {
		return
	}
	s.contentHash ^= hashKeyValue(s.keys[i])
	s.keys = append(s.keys[:i], s.keys[i+1:]...)
}

func (s *state) addLease(id int64) {
	i := sort.Search(len(s.leases), func(i int) bool { return s.leases[i] >= id })
	s.leases = append(s.leases, 0)
	copy(s.leases[i+1:], s.leases[i:])
	s.leases[i] = id
	s.contentHash ^= hashLease(id)
}

func (s *state) removeLease(id int64) {
	i := sort.Search(len(s.leases), func(i int) bool { return s.leases[i] >= id })
	if i < len(s.leases) && s.leases[i] == id {
		s.leases = append(s.leases[:i], s.leases[i+1:]...)
		s.contentHash ^= hashLease(id)
	}
}

// hash satisfies porcupine's contract: equal states hash equal.
func (s *state) hash() uint64 {
	return mix64(s.contentHash ^ mix64(uint64(s.revision)) ^ mix64(uint64(s.compactRevision)+0x9e3779b97f4a7c15) ^
		mix64(uint64(s.nextLeaseID)+0x3c6ef372fe94f82b))
}

func (s *state) equal(o *state) bool {
	if s == o {
		return true
	}
	if s.revision != o.revision || s.compactRevision != o.compactRevision || s.nextLeaseID != o.nextLeaseID || s.contentHash != o.contentHash ||
		len(s.keys) != len(o.keys) || len(s.leases) != len(o.leases) {
		return false
	}
	for i := range s.keys {
		if s.keys[i] != o.keys[i] {
			return false
		}
	}
	for i := range s.leases {
		if s.leases[i] != o.leases[i] {
			return false
		}
	}
	return true
}

func (s *state) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rev %d", s.revision)
	if s.compactRevision > 0 {
		fmt.Fprintf(&b, ", compacted at %d", s.compactRevision)
	}
	b.WriteString(", {")
	for i, kv := range s.keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(kv.String())
	}
	b.WriteString("}")
	if len(s.leases) > 0 {
		fmt.Fprintf(&b, ", leases %v", s.leases)
	}
	return b.String()
}

// mix64 is splitmix64's finalizer: a cheap, well-spread 64-bit mix.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func hashString(h uint64, s string) uint64 {
	// FNV-1a, then a separator so ("ab","c") and ("a","bc") differ.
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 0x100000001b3
	}
	return (h ^ 0xff) * 0x100000001b3
}

func hashKeyValue(kv keyValue) uint64 {
	h := hashString(0xcbf29ce484222325, kv.key)
	h = hashString(h, kv.value)
	h ^= mix64(uint64(kv.createRevision))
	h = mix64(h ^ uint64(kv.modRevision))
	h = mix64(h ^ uint64(kv.version))
	return mix64(h ^ uint64(kv.lease))
}

func hashLease(id int64) uint64 { return mix64(uint64(id) ^ 0x5bd1e9955bd1e995) }

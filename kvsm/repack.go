package kvsm

import "bytes"

// Repacking: the store's key entries and values are allocated one by one as
// writes apply, side by side with the short-lived memory of the same sizes
// that carried them there (decoded requests, log entries, replies). Once
// that memory is collected, the spans it shared with the store's entries
// stay partly used: after a bulk load, a quarter of the heap can be such
// holes, and the Go runtime never moves objects to close them. An idle
// member repacks: it copies the entries and values into densely filled
// blocks and lets the scattered originals go, so that the holes become
// whole free spans the runtime returns to the system.
//
// Repacking changes where the state lives, never what it is: the state
// hash, every View taken before, and everything a reader holds stay as
// they were (entries are immutable; a repacked key gets a new entry, as a
// write would give it). It is not replicated state and members need not
// agree on when they do it.

const (
	// repackBlockBytes is the size of a block values are packed into.
	repackBlockBytes = 256 << 10
	// RepackValueBytesMax: larger values keep their own allocation (they
	// already fill their spans; packing them would only copy). Raft's log
	// entries are repacked with the same bound (node.RepackLog).
	RepackValueBytesMax = 8 << 10
	// repackEntriesPerBlock is how many one-revision entries share a block.
	repackEntriesPerBlock = 1024
)

// Repacker repacks a store a step at a time, so that a large store never
// stalls its member's loop for long and at most a step's worth of entries
// is held twice. It resumes after the last key it repacked; writes
// between steps are fine (a key written since is simply repacked, or not,
// as the cursor finds it).
type Repacker struct {
	after    []byte // the last key repacked; nil before the first step (keys are never empty)
	done     bool
	values   []byte
	entries  []entryWithFirst
	batch    []*keyEntry
	keysDone int
}

// entryWithFirst is a key entry allocated together with its first
// revision (newKeyEntry).
type entryWithFirst struct {
	e     keyEntry
	first [1]keyRev
}

// KeysRepacked is how many key entries the repacker has moved so far.
func (r *Repacker) KeysRepacked() int { return r.keysDone }

// RepackStep repacks up to maxKeys keys of s after the last one repacked and
// reports whether every key has been repacked.
func (s *Store) RepackStep(r *Repacker, maxKeys int) bool {
	if r.done {
		return true
	}
	r.batch = r.batch[:0]
	pivot := &keyEntry{key: r.after}
	s.kv.keys.Ascend(pivot, func(e *keyEntry) bool {
		if r.after != nil && bytes.Equal(e.key, r.after) {
			return true // repacked by the last step
		}
		r.batch = append(r.batch, e)
		return len(r.batch) < maxKeys
	})
	if len(r.batch) > 0 {
		r.after = r.batch[len(r.batch)-1].key
	}
	for i, e := range r.batch {
		s.kv.keys.Set(s.repackEntry(r, e))
		r.batch[i] = nil
	}
	r.keysDone += len(r.batch)
	if len(r.batch) < maxKeys {
		r.done = true
		r.values, r.entries = nil, nil
		return true
	}
	return false
}

// repackEntry returns a copy of e whose entry, key and values live in the
// repacker's blocks. The revision log and the key's lease share the key's
// bytes with its entry; they are pointed at the new copy, so that the old
// one is let go too.
func (s *Store) repackEntry(r *Repacker, e *keyEntry) *keyEntry {
	key := r.pack(e.key)
	var ne *keyEntry
	if len(e.revs) == 1 {
		if len(r.entries) == cap(r.entries) {
			r.entries = make([]entryWithFirst, 0, repackEntriesPerBlock)
		}
		r.entries = r.entries[:len(r.entries)+1]
		ew := &r.entries[len(r.entries)-1]
		ew.first[0] = e.revs[0]
		ew.e.key, ew.e.revs = key, ew.first[:]
		ne = &ew.e
	} else {
		ne = &keyEntry{key: key, revs: append([]keyRev(nil), e.revs...)}
	}
	for i := range ne.revs {
		rev := &ne.revs[i]
		rev.setValue(r.pack(rev.value()))
		if p, ok := s.revLog.at(s.revLog.seek(rev.modMain, rev.modSub)); ok && p.main == rev.modMain && p.sub == rev.modSub {
			assert(bytes.Equal(p.key, e.key), "revision %d.%d of key %q is logged for key %q", rev.modMain, rev.modSub, e.key, p.key)
			p.key = ne.key
		}
	}
	if cur, ok := ne.live(); ok && cur.lease != 0 {
		if l := s.getLease(cur.lease); l != nil {
			l.keys.Set(ne.key) // replaces the equal key
		}
	}
	return ne
}

// pack copies a key or value into the current block.
func (r *Repacker) pack(v []byte) []byte {
	if len(v) == 0 || len(v) > RepackValueBytesMax {
		return v
	}
	if cap(r.values)-len(r.values) < len(v) {
		r.values = make([]byte, 0, repackBlockBytes)
	}
	start := len(r.values)
	r.values = append(r.values, v...)
	// A full slice expression: nothing appended to the slice can reach
	// its neighbour in the block.
	return r.values[start:len(r.values):len(r.values)]
}

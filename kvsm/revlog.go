package kvsm

import (
	"cmp"
	"math"
	"slices"
)

// revLog is the revision index: every kept revision of every key at or
// above the compact revision, in (main, sub) order, naming the key it
// belongs to. Watch catch-up reads history from it and compaction finds
// what to drop with it.
//
// Revisions below the compact revision are left out although their keys
// still hold them (each key keeps its newest one): no watch can start
// there, and a later compaction only trims keys changed since the last
// one, whose changes are all here. After a compaction of a store that
// holds mostly unchanged keys, the log is nearly empty instead of naming
// every key once more.
//
// Revisions only ever arrive in increasing order, so the log is a list of
// chunks that are appended to, not a tree: a tree splitting at its right
// edge leaves every node half full, which would double the index's
// footprint. Compaction rewrites the chunks that hold revisions at or below
// the compaction revision and leaves the rest alone. The log belongs to the
// Store's goroutine only; Views never see it.
type revLog struct {
	chunks [][]revLogEntry // non-empty chunks, ascending; capacity revLogChunkLen
	count  int
}

// revLogChunkLen bounds one chunk; big enough that the chunk list stays
// short, small enough that a compaction touching one chunk stays cheap.
const revLogChunkLen = 4096

type revLogEntry struct {
	main int64
	key  []byte // shared with the key's entry
	sub  int32
}

func (e *revLogEntry) before(main int64, sub int32) bool {
	return e.main < main || (e.main == main && e.sub < sub)
}

func (l *revLog) len() int { return l.count }

func (l *revLog) append(e revLogEntry) {
	if n := len(l.chunks); n > 0 {
		last := l.chunks[n-1]
		tail := &last[len(last)-1]
		assert(tail.before(e.main, e.sub), "revision log out of order: %d.%d after %d.%d", e.main, e.sub, tail.main, tail.sub)
		if len(last) < cap(last) {
			l.chunks[n-1] = append(last, e)
			l.count++
			return
		}
	}
	chunk := make([]revLogEntry, 1, revLogChunkLen)
	chunk[0] = e
	l.chunks = append(l.chunks, chunk)
	l.count++
}

// revLogPos addresses one entry; chunk == len(chunks) means the end.
type revLogPos struct{ chunk, offset int }

// seek returns the position of the first entry at or after (main, sub).
func (l *revLog) seek(main int64, sub int32) revLogPos {
	// First chunk whose last entry is at or after the target.
	lo, hi := 0, len(l.chunks)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		c := l.chunks[mid]
		if c[len(c)-1].before(main, sub) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == len(l.chunks) {
		return revLogPos{chunk: lo}
	}
	c := l.chunks[lo]
	i, j := 0, len(c)
	for i < j {
		mid := int(uint(i+j) >> 1)
		if c[mid].before(main, sub) {
			i = mid + 1
		} else {
			j = mid
		}
	}
	return revLogPos{chunk: lo, offset: i}
}

// at returns the entry at p, or false at the end.
func (l *revLog) at(p revLogPos) (*revLogEntry, bool) {
	if p.chunk >= len(l.chunks) {
		return nil, false
	}
	return &l.chunks[p.chunk][p.offset], true
}

func (l *revLog) next(p revLogPos) revLogPos {
	p.offset++
	if p.offset >= len(l.chunks[p.chunk]) {
		p.chunk++
		p.offset = 0
	}
	return p
}

// compact drops every entry at or below main revision atRev for which keep
// returns false. keep is called once per such entry, in log order.
func (l *revLog) compact(atRev int64, keep func(e *revLogEntry) bool) {
	// Chunks whose first entry is above atRev are untouched.
	split := 0
	for split < len(l.chunks) && l.chunks[split][0].main <= atRev {
		split++
	}
	var rebuilt [][]revLogEntry
	var cur []revLogEntry
	count := 0
	for _, c := range l.chunks[:split] {
		for i := range c {
			e := &c[i]
			if e.main <= atRev && !keep(e) {
				continue
			}
			if cur == nil {
				cur = make([]revLogEntry, 0, revLogChunkLen)
			}
			cur = append(cur, *e)
			count++
			if len(cur) == cap(cur) {
				rebuilt = append(rebuilt, cur)
				cur = nil
			}
		}
	}
	if cur != nil {
		rebuilt = append(rebuilt, cur)
	}
	for _, c := range l.chunks[split:] {
		rebuilt = append(rebuilt, c)
		count += len(c)
	}
	l.chunks = rebuilt
	l.count = count
}

// sortRevLogEntries returns entries sorted by revision. A snapshot lists
// them by key, and a large store holds millions: when their main
// revisions are dense (at most four slots of the range per entry) a
// counting sort by main revision places each in one pass, and the subs of
// one main (a txn's changes) are sorted after; otherwise a comparison sort
// does. Revisions are unique, so both give the same order.
func sortRevLogEntries(entries []revLogEntry) []revLogEntry {
	if len(entries) < 1024 || len(entries) > math.MaxInt32 {
		slices.SortFunc(entries, compareRevLogEntries)
		return entries
	}
	lo, hi := entries[0].main, entries[0].main
	for i := range entries {
		lo, hi = min(lo, entries[i].main), max(hi, entries[i].main)
	}
	span := hi - lo + 1
	if span <= 0 || span > 4*int64(len(entries)) {
		slices.SortFunc(entries, compareRevLogEntries)
		return entries
	}
	next := make([]int32, span+1)
	for i := range entries {
		next[entries[i].main-lo+1]++
	}
	for i := int64(1); i <= span; i++ {
		next[i] += next[i-1]
	}
	sorted := make([]revLogEntry, len(entries))
	for i := range entries {
		m := entries[i].main - lo
		sorted[next[m]] = entries[i]
		next[m]++
	}
	for i := 0; i < len(sorted); {
		j := i + 1
		for j < len(sorted) && sorted[j].main == sorted[i].main {
			j++
		}
		if j-i > 1 {
			slices.SortFunc(sorted[i:j], compareRevLogEntries)
		}
		i = j
	}
	return sorted
}

func compareRevLogEntries(a, b revLogEntry) int {
	return cmp.Or(cmp.Compare(a.main, b.main), cmp.Compare(a.sub, b.sub))
}

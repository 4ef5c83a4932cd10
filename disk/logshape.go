package disk

import (
	"fmt"
	"sort"
)

// termRunsMax bounds the term runs logShape keeps: one per term change in
// the log above the newest snapshot.
const termRunsMax = 1 << 20

type termRun struct {
	firstIndex uint64
	term       uint64
}

// logShape is the shape of the raft log the WAL describes, without the
// entries' contents: which indexes it holds and their terms. The writer
// (Storage) and the reader (Open's replay) keep one each and update it by
// the same rules, so a segment header the writer stamps with (last+1,
// lastTerm) is checked by the reader against its own shape.
type logShape struct {
	// base: indexes at or below it are not in the log (a snapshot covers
	// them, or their segments were released). baseTerm is the term at base,
	// when known.
	base          uint64
	baseTerm      uint64
	baseTermKnown bool
	// last is the last index in the log; last >= base.
	last uint64
	// runs gives the terms of indexes in (base, last]: runs[i].term holds
	// from runs[i].firstIndex up to runs[i+1].firstIndex-1. After
	// forgetBelow, runs may start above base+1.
	runs []termRun
}

func (l *logShape) lastTerm() (uint64, bool) {
	if len(l.runs) > 0 {
		return l.runs[len(l.runs)-1].term, true
	}
	return l.baseTerm, l.baseTermKnown
}

func (l *logShape) termAt(index uint64) (uint64, bool) {
	if index == l.base {
		return l.baseTerm, l.baseTermKnown
	}
	if index < l.base || index > l.last || len(l.runs) == 0 || index < l.runs[0].firstIndex {
		return 0, false
	}
	k := sort.Search(len(l.runs), func(k int) bool { return l.runs[k].firstIndex > index }) - 1
	return l.runs[k].term, true
}

// appendEntry records an entry at index (index <= last+1), overwriting any
// entries at and after it as raft does. An index at or below base, which
// can follow the release of older segments (raft overwrote entries that
// were then still uncommitted), restarts the shape there with the term of
// the entry before it unknown.
func (l *logShape) appendEntry(index, term uint64) error {
	if index == 0 {
		return fmt.Errorf("entry at index 0")
	}
	if index > l.last+1 {
		return fmt.Errorf("entry %d after last index %d leaves a gap", index, l.last)
	}
	if index <= l.base {
		*l = logShape{base: index - 1, last: index - 1}
	}
	if index <= l.last {
		n := sort.Search(len(l.runs), func(k int) bool { return l.runs[k].firstIndex >= index })
		l.runs = l.runs[:n]
	}
	l.last = index
	if lt, ok := l.lastTerm(); !ok || lt != term || len(l.runs) == 0 {
		assertf(len(l.runs) < termRunsMax, "log holds %d term changes", len(l.runs))
		l.runs = append(l.runs, termRun{firstIndex: index, term: term})
	}
	return nil
}

// reset restarts the log after a snapshot at (index, term) it does not
// continue: raft's log after installing a snapshot from the leader.
func (l *logShape) reset(index, term uint64) {
	*l = logShape{base: index, baseTerm: term, baseTermKnown: true, last: index}
}

// forgetBelow drops the term runs that end below index, keeping termAt
// right for every index >= index. Storage calls it as snapshots advance so
// runs stay bounded by the term changes above the newest snapshot.
func (l *logShape) forgetBelow(index uint64) {
	k := sort.Search(len(l.runs), func(k int) bool { return l.runs[k].firstIndex > index }) - 1
	if k > 0 {
		l.runs = append(l.runs[:0], l.runs[k:]...)
	}
}

func (l *logShape) String() string {
	lt, ok := l.lastTerm()
	lts := "?"
	if ok {
		lts = fmt.Sprint(lt)
	}
	return fmt.Sprintf("(base %d, last %d term %s)", l.base, l.last, lts)
}

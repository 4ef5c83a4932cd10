package linearizability

import (
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// The watch validators hold each watcher, on its own, to etcd's watch
// guarantees and to the replayed log:
//   - ordered: event revisions never go down; a later response's events come
//     after an earlier one's (atomic);
//   - unique: no (revision, key) twice;
//   - atomic: a revision's events are never split across responses (a
//     fragmented response is reassembled first) and never delivered in part;
//   - reliable and resumable: from the start revision (start_revision, or
//     after the created reply's header revision when it is 0) up to the last
//     revision the watcher observed (its last event or progress
//     notification), it received exactly the log's matching events, in
//     order, filters applied;
//   - bookmarkable: no event at or below a progress notification's revision
//     comes after it; progress never goes back, nor below a delivered event;
//   - prev_kv is the key as of the revision before the event (nil allowed
//     once that revision may have been compacted); IsCreate (version 1) holds
//     exactly when the key did not exist before;
//   - a watch canceled for compaction was behind the compaction revision it
//     names, which the log did compact at.

type revisionKey struct {
	revision int64
	key      string
}

// watchEvent is one received event.
type watchEvent struct {
	event
	message int // index of the reassembled message it came in
}

type watchCheck struct {
	run    *checkRun
	w      WatchHistory
	name   string
	keys   keyRange
	noPut  bool
	noDel  bool
	prevKV bool
}

func (run *checkRun) checkWatches() {
	for i, w := range run.in.Watches {
		run.stats.Watches++
		if w.Create == nil {
			run.report.add(checkerHistory, "watch #%d (client %d): no create request", i, w.Client)
			continue
		}
		key := w.Create.GetKey()
		if len(key) == 0 {
			key = []byte{0}
		}
		wc := &watchCheck{run: run, w: w, keys: newKeyRange(key, w.Create.GetRangeEnd()), prevKV: w.Create.GetPrevKv()}
		for _, f := range w.Create.GetFilters() {
			switch f {
			case pb.WatchCreateRequest_NOPUT:
				wc.noPut = true
			case pb.WatchCreateRequest_NODELETE:
				wc.noDel = true
			}
		}
		wc.name = fmt.Sprintf("watch #%d (client %d, member %x, %s from %d", i, w.Client, w.Member, wc.keys, w.Create.GetStartRevision())
		if wc.noPut {
			wc.name += ", no put"
		}
		if wc.noDel {
			wc.name += ", no delete"
		}
		if wc.prevKV {
			wc.name += ", prev_kv"
		}
		wc.name += ")"
		wc.check()
	}
}

func (wc *watchCheck) add(checker, format string, args ...any) {
	wc.run.report.add(checker, "%s: %s", wc.name, fmt.Sprintf(format, args...))
}

func (wc *watchCheck) wants(e event) bool {
	if !wc.keys.contains(e.kv.key) {
		return false
	}
	if e.typ == mvccpb.PUT {
		return !wc.noPut
	}
	return !wc.noDel
}

func convertEvent(e *mvccpb.Event) event {
	kv := convertKV(e.GetKv())
	return event{typ: e.GetType(), kv: kv, prevKV: convertKVPtr(e.GetPrevKv()), revision: kv.modRevision}
}

func (wc *watchCheck) check() {
	var (
		events         []watchEvent
		createdRev     int64 = -1 // header revision of the created reply
		canceled       bool
		compactRev     int64
		lastEventRev   int64
		lastProgress   int64
		message        int
		openFragment   bool  // the last response was a fragment with more to come
		seen                 = map[revisionKey]bool{}
		lastMessageRev int64 = -1
	)
	start := wc.w.Create.GetStartRevision()
	for ri, rcv := range wc.w.Responses {
		resp := rcv.Resp
		at := responseAt{index: ri, time: rcv.Time}
		if resp == nil {
			wc.run.report.add(checkerHistory, "%s: %s is nil", wc.name, at)
			continue
		}
		header := resp.GetHeader().GetRevision()
		if canceled {
			wc.add(checkerWatchCancel, "%s arrived after the watch was canceled", at)
		}
		if resp.GetCreated() {
			createdRev = header
		}
		if resp.GetCanceled() {
			canceled = true
			compactRev = resp.GetCompactRevision()
		}
		evs := resp.GetEvents()
		if len(evs) == 0 && !resp.GetCreated() && !resp.GetCanceled() && resp.GetCompactRevision() == 0 && !resp.GetFragment() {
			// etcd's IsProgressNotify: nothing but a header revision.
			if header == 0 {
				wc.run.report.add(checkerHistory, "%s: %s is empty: no events, no header revision", wc.name, at)
				continue
			}
			wc.progress(at, rcv.Time, header, &lastProgress, lastEventRev)
			continue
		}
		if len(evs) == 0 {
			continue
		}
		for _, pe := range evs {
			wc.run.stats.WatchEvents++
			e := convertEvent(pe)
			if !wc.wants(e) {
				wc.add(checkerWatchFilter, "%s carries %s, which the watch's range and filters exclude", at, e)
			}
			if e.revision < lastEventRev {
				wc.add(checkerWatchOrdered, "%s carries %s after an event at revision %d", at, e, lastEventRev)
			}
			if e.revision <= lastProgress {
				wc.add(checkerWatchBookmark, "%s carries %s after a progress notification at revision %d", at, e, lastProgress)
			}
			id := revisionKey{e.revision, e.kv.key}
			if seen[id] {
				wc.add(checkerWatchUnique, "%s carries %s a second time", at, e)
			}
			seen[id] = true
			if header < e.revision {
				wc.add(checkerWatchHeader, "%s has header revision %d below its event %s", at, header, e)
			}
			wc.checkEventContent(at, e)
			lastEventRev = max(lastEventRev, e.revision)
			events = append(events, watchEvent{event: e, message: message})
		}
		// A revision split across two messages breaks atomicity.
		first := convertEvent(evs[0]).revision
		if !openFragment && first == lastMessageRev {
			wc.add(checkerWatchAtomic, "%s starts at revision %d, which the previous response already delivered events of", at, first)
		}
		lastMessageRev = convertEvent(evs[len(evs)-1]).revision
		openFragment = resp.GetFragment()
		if !openFragment {
			message++
		}
	}
	if canceled && compactRev > 0 {
		wc.checkCompactionCancel(start, createdRev, lastEventRev, lastProgress, compactRev)
		if len(events) == 0 && lastProgress == 0 {
			return
		}
	}
	// The window the watcher vouches for: from where it started to the last
	// revision it observed. A run that ended inside a fragmented response
	// vouches only for the revisions before the open one.
	from := start
	switch {
	case from > 0:
	case createdRev >= 0:
		from = createdRev + 1
	case len(events) > 0:
		from = events[0].revision
	case lastProgress > 0:
		from = lastProgress + 1
	default:
		return
	}
	to := max(lastEventRev, lastProgress)
	if openFragment && len(events) > 0 && lastEventRev > lastProgress {
		to = lastEventRev - 1
		for len(events) > 0 && events[len(events)-1].revision > to {
			events = events[:len(events)-1]
		}
	}
	wc.checkReliable(from, to, events, start > 0 || createdRev >= 0)
}

// progress checks one progress notification.
func (wc *watchCheck) progress(at responseAt, t, rev int64, lastProgress *int64, lastEventRev int64) {
	rp := wc.run.replay
	asked := wc.w.Create.GetProgressNotify()
	for _, r := range wc.w.RequestedProgressAt {
		asked = asked || r <= t
	}
	if !asked {
		wc.add(checkerWatchProgress, "%s is a progress notification (revision %d), but the watch did not ask for progress notifications and no progress request was sent before it", at, rev)
	}
	if rev < *lastProgress {
		wc.add(checkerWatchBookmark, "%s is a progress notification at revision %d, below the previous one at %d", at, rev, *lastProgress)
	}
	if rev < lastEventRev {
		wc.add(checkerWatchBookmark, "%s is a progress notification at revision %d, below an event already delivered at %d", at, rev, lastEventRev)
	}
	if rev > rp.final.revision {
		wc.add(checkerWatchBookmark, "%s is a progress notification at revision %d, beyond the last committed revision %d", at, rev, rp.final.revision)
	}
	*lastProgress = max(*lastProgress, rev)
}

// responseAt names a watch response in failures. It is formatted only when
// a failure is reported: the checks run for every response of every run.
type responseAt struct {
	index int
	time  int64
}

func (r responseAt) String() string { return fmt.Sprintf("response #%d at %d", r.index, r.time) }

// watchResponseAt names a response with its watch.
type watchResponseAt struct {
	watch string
	at    responseAt
}

func (w watchResponseAt) String() string { return w.watch + ": " + w.at.String() }

// checkEventContent holds one event to the log: IsCreate and prev_kv.
func (wc *watchCheck) checkEventContent(at responseAt, e event) {
	rp := wc.run.replay
	if e.typ == mvccpb.PUT && (e.kv.version == 1) != (e.kv.createRevision == e.kv.modRevision) {
		wc.add(checkerWatchIsCreate, "%s carries %s: version 1 and create revision == mod revision disagree", at, e)
	}
	if e.typ == mvccpb.PUT {
		wc.run.checkKeyLease(watchResponseAt{wc.name, at}, e.kv, e.revision-1)
	}
	if !wc.prevKV && e.prevKV != nil {
		wc.add(checkerWatchPrevKV, "%s carries %s with prev_kv %s, which the watch did not ask for", at, e, e.prevKV)
	}
	before := rp.stateAt(e.revision - 1)
	if before == nil || e.revision > rp.final.revision {
		return // not an event of the log; the reliable check names it
	}
	old, existed := before.get(e.kv.key)
	if e.typ == mvccpb.PUT && (e.kv.version == 1) == existed {
		wc.add(checkerWatchIsCreate, "%s carries %s, but key %s %s at revision %d", at, e, quote(e.kv.key),
			map[bool]string{true: "existed", false: "did not exist"}[existed], e.revision-1)
	}
	if !wc.prevKV {
		return
	}
	switch {
	case e.prevKV == nil && !existed:
	case e.prevKV == nil && e.revision-1 < rp.maxCompaction:
		// The revision before may have been compacted when the event was sent.
	case e.prevKV == nil:
		wc.add(checkerWatchPrevKV, "%s carries %s without prev_kv; the key was %s at revision %d, never compacted", at, e, old, e.revision-1)
	case !existed:
		wc.add(checkerWatchPrevKV, "%s carries %s with prev_kv %s, but the key did not exist at revision %d", at, e, e.prevKV, e.revision-1)
	case *e.prevKV != old:
		wc.add(checkerWatchPrevKV, "%s carries %s with prev_kv %s, but the key was %s at revision %d", at, e, e.prevKV, old, e.revision-1)
	}
}

// checkCompactionCancel: a watch canceled for compaction must have been
// behind the compaction, which must be one the log made.
func (wc *watchCheck) checkCompactionCancel(start, createdRev, lastEventRev, lastProgress, compactRev int64) {
	next := max(start, lastEventRev+1, lastProgress+1)
	if start == 0 && createdRev >= 0 {
		next = max(next, createdRev+1)
	}
	if next >= compactRev {
		wc.add(checkerWatchCompact, "canceled with compact_revision %d, but the watcher was at revision %d, not behind the compaction", compactRev, next)
	}
	if !wc.run.replay.compactedAt(compactRev) {
		wc.add(checkerWatchCompact, "canceled with compact_revision %d, a revision the committed log never compacted at (compactions %v)", compactRev, wc.run.replay.compactions)
	}
}

// checkReliable compares the events received with the log's matching events
// in [from, to], and names the first difference.
func (wc *watchCheck) checkReliable(from, to int64, got []watchEvent, startKnown bool) {
	if from > to {
		if len(got) > 0 {
			wc.add(checkerWatchResume, "received %s, before the watch's start revision %d", got[0].event, from)
		}
		return
	}
	var want []event
	for _, e := range wc.run.replay.eventsBetween(from, to) {
		if wc.wants(e) {
			want = append(want, e)
		}
	}
	received := map[int64]int{} // events received per revision
	for _, g := range got {
		received[g.revision]++
	}
	i := 0
	for ; i < len(want) && i < len(got); i++ {
		if !sameEvent(want[i], got[i].event) {
			break
		}
	}
	if i == len(want) && i == len(got) {
		return
	}
	switch {
	case i < len(got) && got[i].revision < from:
		wc.add(checkerWatchResume, "received %s, before the watch's start revision %d", got[i].event, from)
	case i < len(want) && i == 0 && startKnown && (len(got) == 0 || got[0].revision > want[0].revision):
		wc.add(checkerWatchResume, "the first matching event at or after revision %d is %s, but the watcher's first event is %s",
			from, want[0], firstOf(got))
	case i < len(want) && received[want[i].revision] > 0 && (i >= len(got) || got[i].revision > want[i].revision):
		n := 0
		for _, w := range want {
			if w.revision == want[i].revision {
				n++
			}
		}
		wc.add(checkerWatchAtomic, "revision %d delivered in part: %d of its %d matching events; missing %s",
			want[i].revision, received[want[i].revision], n, want[i])
	case i < len(want) && (i >= len(got) || got[i].revision > want[i].revision):
		wc.add(checkerWatchReliable, "missing %s: the watcher observed revisions %d..%d (last event %s) but not this event of the log",
			want[i], from, to, lastOf(got))
	case i < len(got) && i < len(want):
		wc.add(checkerWatchReliable, "received %s where the log has %s", got[i].event, want[i])
	default:
		wc.add(checkerWatchReliable, "received %s, which is not an event of the log in revisions %d..%d", got[i].event, from, to)
	}
}

func firstOf(got []watchEvent) string {
	if len(got) == 0 {
		return "none"
	}
	return got[0].event.String()
}

func lastOf(got []watchEvent) string {
	if len(got) == 0 {
		return "none"
	}
	return got[len(got)-1].event.String()
}

// sameEvent compares type and kv; prev_kv is checked on its own, since it may
// legitimately be missing.
func sameEvent(a, b event) bool {
	return a.typ == b.typ && a.revision == b.revision && a.kv == b.kv
}

package kvsm

import (
	"bytes"
	"slices"

	"github.com/tidwall/btree"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// The watch registry. node and server own delivery; kvsm decides what each
// watcher must see, in what order, and when it is complete:
//
//   - A synced watcher is fed as each entry applies: one reply per revision
//     holding all of that revision's events that it wants.
//   - An unsynced watcher (started in the past, paused, or pushed out by its
//     stream's queue bound) reads history from the revision log in
//     WatchPoll, within an event budget, and becomes synced once it reaches
//     the current revision. A watcher whose next revision was compacted away
//     is cancelled with compact_revision set.
//   - Replies queue per stream until WatchPoll hands them out. A stream's
//     queued events are bounded by streamQueuedEventsMax; a watcher whose
//     reply does not fit becomes unsynced and catches up from history, so a
//     slow stream costs history reads, not memory.
//   - One revision's events for one watcher are never split across replies.
//
// Everything here is deterministic: watchers are kept in (stream, watch ID)
// order and every walk follows it.

// StreamID names one client watch stream.
type StreamID uint64

// StreamResponse is one reply for one stream.
type StreamResponse struct {
	Stream StreamID
	Resp   *pb.WatchResponse
}

const (
	// streamQueuedEventsMax bounds the events queued on one stream between
	// two WatchPolls. A single revision larger than this is still queued
	// whole when the stream's queue is empty: revisions are never split.
	streamQueuedEventsMax = 4096
	// catchUpRevisionsMax bounds the revisions in one catch-up reply
	// (etcd's watchBatchMaxRevs).
	catchUpRevisionsMax = 1000
	// catchUpScanEntriesMax bounds the revision-log entries one WatchPoll
	// reads for catch-up, matched or not. It is checked between revisions.
	catchUpScanEntriesMax = 1 << 16
	// invalidWatchID is clientv3.InvalidWatchID: failed creates and
	// stream-wide progress replies carry it.
	invalidWatchID = -1
)

// Cancel reasons, with etcd's texts.
var (
	reasonEmptyRange  = "mvcc: watcher range is empty"
	reasonDuplicateID = "mvcc: duplicate watch ID provided on the WatchStream"
)

type watcher struct {
	stream  *watchStream
	id      int64
	span    keySpan // owned copy of the request's key and range_end
	nextRev int64   // every event below it has been queued or filtered out
	// startRev is the start revision the client asked for (0: none). Until
	// the store reaches it, the watcher gets no progress reply (see
	// progressAllowed).
	startRev int64
	prevKV   bool
	noPut    bool
	noDelete bool
	progress bool // progress_notify
	synced   bool

	eventsSinceTick bool // events queued since the last WatchProgressNotify
	progressQueued  bool // a progress reply for this watcher awaits WatchPoll

	batch []*mvccpb.Event // scratch while one revision is fed
}

func watcherLess(a, b *watcher) bool {
	if a.stream.id != b.stream.id {
		return a.stream.id < b.stream.id
	}
	return a.id < b.id
}

type queuedReply struct {
	watchID int64
	events  int
	resp    *pb.WatchResponse
}

type watchStream struct {
	id                StreamID
	watchers          *btree.BTreeG[*watcher] // by watch ID
	nextWatchID       int64                   // next automatic watch ID candidate
	unsynced          int
	queue             []queuedReply
	queuedEvents      int
	progressRequested bool // a progress request waits for every watcher to sync
}

func (st *watchStream) canQueue(events int) bool {
	return st.queuedEvents == 0 || st.queuedEvents+events <= streamQueuedEventsMax
}

type watchRegistry struct {
	streams   *btree.BTreeG[*watchStream]
	singleKey map[string][]*watcher   // synced watchers of one key, by key; looked up, never walked
	ranged    *btree.BTreeG[*watcher] // synced watchers of a range
	unsynced  *btree.BTreeG[*watcher]
	cursor    *watcher // last unsynced watcher served; the next poll starts after it
}

func (reg *watchRegistry) init() {
	reg.streams = btree.NewBTreeGOptions(func(a, b *watchStream) bool { return a.id < b.id }, btree.Options{NoLocks: true})
	reg.singleKey = map[string][]*watcher{}
	reg.ranged = btree.NewBTreeGOptions(watcherLess, btree.Options{NoLocks: true})
	reg.unsynced = btree.NewBTreeGOptions(watcherLess, btree.Options{NoLocks: true})
}

func (reg *watchRegistry) stream(id StreamID) *watchStream {
	st, _ := reg.streams.Get(&watchStream{id: id})
	return st
}

func (reg *watchRegistry) streamOrNew(id StreamID) *watchStream {
	if st := reg.stream(id); st != nil {
		return st
	}
	st := &watchStream{id: id, watchers: btree.NewBTreeGOptions(func(a, b *watcher) bool { return a.id < b.id }, btree.Options{NoLocks: true})}
	reg.streams.Set(st)
	return st
}

func (st *watchStream) watcher(id int64) *watcher {
	w, _ := st.watchers.Get(&watcher{id: id})
	return w
}

func (reg *watchRegistry) addSynced(w *watcher) {
	w.synced = true
	if w.span.kind == spanSingle {
		k := string(w.span.key)
		reg.singleKey[k] = append(reg.singleKey[k], w)
		return
	}
	reg.ranged.Set(w)
}

func (reg *watchRegistry) removeSynced(w *watcher) {
	w.synced = false
	if w.span.kind == spanSingle {
		k := string(w.span.key)
		list := reg.singleKey[k]
		i := slices.Index(list, w)
		assert(i >= 0, "synced watcher %d missing from its key", w.id)
		list = slices.Delete(list, i, i+1)
		if len(list) == 0 {
			delete(reg.singleKey, k)
		} else {
			reg.singleKey[k] = list
		}
		return
	}
	_, ok := reg.ranged.Delete(w)
	assert(ok, "synced watcher %d missing from the ranged set", w.id)
}

func (reg *watchRegistry) makeUnsynced(w *watcher, nextRev int64) {
	if w.synced {
		reg.removeSynced(w)
		reg.unsynced.Set(w)
		w.stream.unsynced++
	}
	w.nextRev = nextRev
}

func (reg *watchRegistry) makeSynced(w *watcher) {
	assert(!w.synced, "watcher %d synced twice", w.id)
	_, ok := reg.unsynced.Delete(w)
	assert(ok, "unsynced watcher %d missing", w.id)
	w.stream.unsynced--
	reg.addSynced(w)
}

func (reg *watchRegistry) remove(w *watcher) {
	if w.synced {
		reg.removeSynced(w)
	} else {
		reg.unsynced.Delete(w)
		w.stream.unsynced--
	}
	if reg.cursor == w {
		reg.cursor = nil
	}
	w.stream.watchers.Delete(w)
}

// WatchCreate registers a watcher and returns the created reply (created
// and canceled, with watch ID -1 and a reason, when it cannot be created).
// An empty key means "\x00"; range_end "\x00" means every key from key on.
// start_revision 0 watches what comes after the current revision; a past
// revision is replayed from history by WatchPoll (or cancelled there if it
// is compacted). A nil request gets no reply, as in etcd.
func (s *Store) WatchCreate(stream StreamID, req *pb.WatchCreateRequest) *pb.WatchResponse {
	if req == nil {
		return nil
	}
	fail := func(reason string) *pb.WatchResponse {
		return &pb.WatchResponse{Header: s.header(), WatchId: invalidWatchID, Created: true, Canceled: true, CancelReason: reason}
	}
	key := req.GetKey()
	if len(key) == 0 {
		key = []byte{0}
	}
	if req.GetStartRevision() < 0 {
		return fail(rpctypes.ErrCompacted.Error())
	}
	span := makeSpan(bytes.Clone(key), bytes.Clone(req.GetRangeEnd()))
	if span.kind == spanInterval && bytes.Compare(span.key, span.end) >= 0 {
		return fail(reasonEmptyRange)
	}
	reg := &s.watch
	st := reg.streamOrNew(stream)
	id := req.GetWatchId()
	if id == 0 {
		for st.watcher(st.nextWatchID) != nil {
			st.nextWatchID++
		}
		id = st.nextWatchID
		st.nextWatchID++
	} else if st.watcher(id) != nil {
		return fail(reasonDuplicateID)
	}
	w := &watcher{stream: st, id: id, span: span, startRev: req.GetStartRevision(), prevKV: req.GetPrevKv(), progress: req.GetProgressNotify()}
	for _, f := range req.GetFilters() {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			w.noPut = true
		case pb.WatchCreateRequest_NODELETE:
			w.noDelete = true
		}
	}
	st.watchers.Set(w)
	start := req.GetStartRevision()
	if start == 0 || start > s.kv.rev {
		w.nextRev = max(start, s.kv.rev+1)
		reg.addSynced(w)
	} else {
		w.nextRev = start
		reg.unsynced.Set(w)
		st.unsynced++
	}
	return &pb.WatchResponse{Header: s.header(), WatchId: id, Created: true}
}

// WatchCancel removes a watcher and returns the canceled reply, or nil when
// the stream has no such watcher (etcd sends nothing then). Replies queued
// for the watcher and not yet polled are dropped, so the canceled reply is
// the last the client hears of it.
func (s *Store) WatchCancel(stream StreamID, watchID int64) *pb.WatchResponse {
	st := s.watch.stream(stream)
	if st == nil {
		return nil
	}
	w := st.watcher(watchID)
	if w == nil {
		return nil
	}
	s.watch.remove(w)
	kept := st.queue[:0]
	for _, q := range st.queue {
		if q.watchID == watchID {
			st.queuedEvents -= q.events
			continue
		}
		kept = append(kept, q)
	}
	clear(st.queue[len(kept):])
	st.queue = kept
	return &pb.WatchResponse{Header: s.header(), WatchId: watchID, Canceled: true}
}

// WatchCloseStream forgets a stream, its watchers and its queued replies.
func (s *Store) WatchCloseStream(stream StreamID) {
	reg := &s.watch
	st := reg.stream(stream)
	if st == nil {
		return
	}
	var all []*watcher
	st.watchers.Scan(func(w *watcher) bool {
		all = append(all, w)
		return true
	})
	for _, w := range all {
		reg.remove(w)
	}
	reg.streams.Delete(st)
}

// WatchPause moves a watcher to unsynced from its next revision: delivery is
// blocked downstream, so it will catch up from history later rather than
// queue more (etcd's victim watchers).
func (s *Store) WatchPause(stream StreamID, watchID int64) {
	st := s.watch.stream(stream)
	if st == nil {
		return
	}
	if w := st.watcher(watchID); w != nil && w.synced {
		s.watch.makeUnsynced(w, max(w.nextRev, s.kv.rev+1))
	}
}

// WatchRequestProgress queues a progress reply (watch ID -1, header revision
// = current) for the stream as soon as all its watchers are synced: every
// event at or below that revision has then been queued before it. A stream
// without watchers gets no reply, as in etcd.
func (s *Store) WatchRequestProgress(stream StreamID) {
	st := s.watch.stream(stream)
	if st == nil {
		return
	}
	st.progressRequested = true
	s.maybeQueueProgress(st)
}

func (s *Store) maybeQueueProgress(st *watchStream) {
	if !st.progressRequested || (st.unsynced > 0 && !s.cfg.PlantedProgressOvertakesEvents) {
		return
	}
	blocked := false
	st.watchers.Scan(func(w *watcher) bool {
		blocked = !s.progressAllowed(w)
		return !blocked
	})
	if blocked {
		return // asked again at every poll, until the store gets there
	}
	st.progressRequested = false
	if st.watchers.Len() == 0 {
		return
	}
	st.queue = append(st.queue, queuedReply{watchID: invalidWatchID, resp: &pb.WatchResponse{Header: s.header(), WatchId: invalidWatchID}})
}

// progressAllowed reports whether a progress reply may reach w: not while
// the store is below the start revision w asked for. A progress reply at
// the current revision would then be below the watch's start, and below
// events a client that resumed its watch from there has already seen
// (client/v3 resumes after the last event it received, possibly on a
// member that is behind). etcd holds such progress back the same way.
func (s *Store) progressAllowed(w *watcher) bool { return w.startRev <= s.kv.rev }

// WatchProgressNotify is the periodic progress tick: every synced watcher
// with progress_notify that had no events queued since the previous tick
// gets an empty reply with the current revision.
func (s *Store) WatchProgressNotify() {
	s.watch.streams.Scan(func(st *watchStream) bool {
		st.watchers.Scan(func(w *watcher) bool {
			if w.progress && w.synced && !w.eventsSinceTick && !w.progressQueued && s.progressAllowed(w) {
				st.queue = append(st.queue, queuedReply{watchID: w.id, resp: &pb.WatchResponse{Header: s.header(), WatchId: w.id}})
				w.progressQueued = true
			}
			w.eventsSinceTick = false
			return true
		})
		return true
	})
}

// wants reports whether the watcher takes ev, and returns the event to
// queue (a copy carrying prev_kv when asked for).
func (s *Store) wants(w *watcher, ev *mvccpb.Event) (*mvccpb.Event, bool) {
	if ev.GetKv().GetModRevision() < w.nextRev || !w.span.contains(ev.GetKv().GetKey()) {
		return nil, false
	}
	if (w.noPut && ev.GetType() == mvccpb.Event_PUT) || (w.noDelete && ev.GetType() == mvccpb.Event_DELETE) {
		return nil, false
	}
	if !w.prevKV {
		return ev, true
	}
	out := &mvccpb.Event{Type: ev.GetType(), Kv: ev.GetKv()}
	out.PrevKv = s.prevKV(ev)
	return out, true
}

// prevKV is the key's value just before the event, as etcd's watch server
// reads it: nothing for a creation or when that revision is compacted.
func (s *Store) prevKV(ev *mvccpb.Event) *mvccpb.KeyValue {
	kv := ev.GetKv()
	if ev.GetType() == mvccpb.Event_PUT && kv.GetCreateRevision() == kv.GetModRevision() {
		return nil
	}
	at := kv.GetModRevision() - 1
	if at < s.kv.compactRev {
		return nil
	}
	e := s.lookup(kv.GetKey())
	if e == nil {
		return nil
	}
	r, ok := e.at(at)
	if !ok {
		return nil
	}
	return newKeyValue(e.key, r)
}

// watchNotify feeds one applied revision to the synced watchers.
func (s *Store) watchNotify(rev int64, events []*mvccpb.Event) {
	reg := &s.watch
	if reg.streams.Len() == 0 {
		return
	}
	var matched []*watcher
	take := func(w *watcher, ev *mvccpb.Event) {
		if out, ok := s.wants(w, ev); ok {
			if len(w.batch) == 0 {
				matched = append(matched, w)
			}
			w.batch = append(w.batch, out)
		}
	}
	for _, ev := range events {
		for _, w := range reg.singleKey[string(ev.GetKv().GetKey())] {
			take(w, ev)
		}
	}
	if reg.ranged.Len() > 0 {
		reg.ranged.Scan(func(w *watcher) bool {
			for _, ev := range events {
				take(w, ev)
			}
			return true
		})
	}
	slices.SortFunc(matched, func(a, b *watcher) int {
		switch {
		case watcherLess(a, b):
			return -1
		case watcherLess(b, a):
			return 1
		}
		return 0
	})
	for _, w := range matched {
		batch := w.batch
		w.batch = nil
		st := w.stream
		if !st.canQueue(len(batch)) {
			reg.makeUnsynced(w, rev)
			continue
		}
		st.queue = append(st.queue, queuedReply{watchID: w.id, events: len(batch), resp: &pb.WatchResponse{
			Header: &pb.ResponseHeader{Revision: rev}, WatchId: w.id, Events: batch,
		}})
		st.queuedEvents += len(batch)
		w.nextRev = rev + 1
		w.eventsSinceTick = true
	}
}

// WatchPoll catches unsynced watchers up from history, reading at most
// eventBudget events in all (a single revision larger than the whole budget
// is still read when it comes first, since revisions are never split; a
// budget of 0 or less reads none), then
// returns every queued reply: streams in ascending ID order, each stream's
// replies in the order they were queued.
func (s *Store) WatchPoll(eventBudget int) []StreamResponse {
	reg := &s.watch
	s.catchUp(eventBudget)
	var out []StreamResponse
	reg.streams.Scan(func(st *watchStream) bool {
		s.maybeQueueProgress(st)
		for _, q := range st.queue {
			out = append(out, StreamResponse{Stream: st.id, Resp: q.resp})
			if w := st.watcher(q.watchID); w != nil {
				w.progressQueued = false
			}
		}
		clear(st.queue)
		st.queue = st.queue[:0]
		st.queuedEvents = 0
		return true
	})
	return out
}

func (s *Store) catchUp(eventBudget int) {
	reg := &s.watch
	if reg.unsynced.Len() == 0 {
		return
	}
	// Walk every unsynced watcher once, starting after the cursor so that
	// a small budget is shared fairly across polls.
	var order []*watcher
	if reg.cursor != nil {
		reg.unsynced.Ascend(reg.cursor, func(w *watcher) bool {
			if w != reg.cursor {
				order = append(order, w)
			}
			return true
		})
	}
	reg.unsynced.Scan(func(w *watcher) bool {
		if reg.cursor != nil && watcherLess(reg.cursor, w) {
			return false
		}
		order = append(order, w)
		return true
	})
	budget := eventBudget
	scanLeft := catchUpScanEntriesMax
	blocked := false
	for _, w := range order {
		if s.kv.compactRev > 0 && w.nextRev < s.kv.compactRev {
			w.stream.queue = append(w.stream.queue, queuedReply{watchID: w.id, resp: &pb.WatchResponse{
				Header: s.header(), WatchId: w.id, Canceled: true, CompactRevision: s.kv.compactRev,
			}})
			reg.remove(w)
			continue
		}
		if w.nextRev <= s.kv.rev && !blocked && budget > 0 && scanLeft > 0 {
			used, scanned, stop := s.catchUpWatcher(w, budget, scanLeft, budget == eventBudget)
			budget -= used
			scanLeft -= scanned
			switch stop {
			case stopBudget:
				// The next revision did not fit what is left of the
				// budget. Leave the cursor before this watcher so the
				// next poll serves it first, with the whole budget: a
				// large revision cannot starve.
				blocked = true
			case stopStreamFull:
				// Its stream's queue is full; other streams go on.
			default:
				reg.cursor = w
			}
		}
		if w.nextRev > s.kv.rev {
			reg.makeSynced(w)
		}
	}
}

// catchUpWatcher reads history for one watcher from its next revision and
// queues one reply. It returns the events queued, the log entries read and
// whether it stopped at a revision that did not fit the budget or the
// stream's queue bound.
func (s *Store) catchUpWatcher(w *watcher, budget, scanLimit int, first bool) (used, scanned int, stop catchUpStop) {
	if w.span.kind == spanSingle {
		return s.catchUpKey(w, budget, first)
	}
	st := w.stream
	var events []*mvccpb.Event
	revs := 0
	pos := s.revLog.seek(w.nextRev, 0)
	for revs < catchUpRevisionsMax && scanned < scanLimit {
		le, ok := s.revLog.at(pos)
		if !ok {
			// History is exhausted: nothing more up to the current
			// revision (revision 1, for one, has no entries).
			w.nextRev = max(w.nextRev, s.kv.rev+1)
			break
		}
		main := le.main
		var revEvents []*mvccpb.Event
		for ok && le.main == main {
			scanned++
			if w.span.contains(le.key) {
				ev := s.historyEvent(le)
				if out, want := s.wants(w, ev); want {
					revEvents = append(revEvents, out)
				}
			}
			pos = s.revLog.next(pos)
			le, ok = s.revLog.at(pos)
		}
		if len(revEvents) > 0 {
			if stop = admitRevision(st, events, revEvents, budget, first); stop != stopNone {
				break
			}
			events = append(events, revEvents...)
			revs++
		}
		w.nextRev = main + 1
	}
	s.queueCatchUp(w, events)
	return len(events), scanned, stop
}

// queueCatchUp queues a catch-up's events, if any, as one reply to w.
func (s *Store) queueCatchUp(w *watcher, events []*mvccpb.Event) {
	if len(events) == 0 {
		return
	}
	st := w.stream
	st.queue = append(st.queue, queuedReply{watchID: w.id, events: len(events), resp: &pb.WatchResponse{
		Header: s.header(), WatchId: w.id, Events: events,
	}})
	st.queuedEvents += len(events)
	w.eventsSinceTick = true
}

// admitRevision decides whether one revision's events join a catch-up
// reply that already holds events: not if they would pass the event
// budget or the stream's queue bound. The first revision of a watcher's
// first reply on an empty stream is always admitted, however large, since
// a revision is never split and the watcher must make progress.
func admitRevision(st *watchStream, events, revEvents []*mvccpb.Event, budget int, first bool) catchUpStop {
	n := len(events) + len(revEvents)
	if first && len(events) == 0 && st.queuedEvents == 0 {
		return stopNone
	}
	if n > budget {
		return stopBudget
	}
	if !st.canQueue(n) {
		return stopStreamFull
	}
	return stopNone
}

// catchUpKey is catchUpWatcher for a watcher of one key: it reads that
// key's own history, not the whole revision log.
func (s *Store) catchUpKey(w *watcher, budget int, first bool) (used, scanned int, stop catchUpStop) {
	st := w.stream
	var events []*mvccpb.Event
	revs := 0
	if e := s.lookup(w.span.key); e != nil {
		i := e.indexAt(w.nextRev-1) + 1 // first revision at or after nextRev
		for i < len(e.revs) && revs < catchUpRevisionsMax {
			main := e.revs[i].modMain
			var revEvents []*mvccpb.Event
			for ; i < len(e.revs) && e.revs[i].modMain == main; i++ {
				scanned++
				if out, want := s.wants(w, newEvent(e.key, &e.revs[i])); want {
					revEvents = append(revEvents, out)
				}
			}
			if len(revEvents) > 0 {
				if stop = admitRevision(st, events, revEvents, budget, first); stop != stopNone {
					break
				}
				events = append(events, revEvents...)
				revs++
			}
			w.nextRev = main + 1
		}
		if stop == stopNone && i == len(e.revs) {
			// The key's whole history is read.
			w.nextRev = max(w.nextRev, s.kv.rev+1)
		}
	} else {
		w.nextRev = max(w.nextRev, s.kv.rev+1)
	}
	s.queueCatchUp(w, events)
	return len(events), scanned, stop
}

// catchUpStop says why a catch-up stopped short of the current revision.
type catchUpStop uint8

const (
	stopNone       catchUpStop = iota // reached the end, the scan bound or the revisions bound
	stopBudget                        // the next revision exceeds what is left of the budget
	stopStreamFull                    // the next revision exceeds the stream's queue bound
)

// historyEvent rebuilds the event of one stored revision.
func (s *Store) historyEvent(le *revLogEntry) *mvccpb.Event {
	e := s.lookup(le.key)
	assert(e != nil, "revision log names missing key %q", le.key)
	i := e.find(le.main, le.sub)
	assert(i >= 0, "key %q lacks logged revision %d.%d", le.key, le.main, le.sub)
	return newEvent(e.key, &e.revs[i])
}

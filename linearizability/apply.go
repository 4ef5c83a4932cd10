package linearizability

import (
	"cmp"
	"slices"
	"strconv"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// apply is the one place where the semantics of the etcd KV API live. The
// porcupine model steps through it, the replay of the committed log runs
// through it, and the self-tests' sequential executions are built with it.
// Each rule below follows etcd v3.7's apply path (server/etcdserver/txn);
// the comments name the etcd behaviour where it is not obvious.

// maxLeaseTTLSeconds is etcd's lease.MaxLeaseTTL.
const maxLeaseTTLSeconds = 9000000000

// applyConfig is what apply needs beyond the state and the request.
type applyConfig struct {
	minLeaseTTL int64 // seconds; grants below it are raised to it (0: no floor known)
	// past answers reads at a past revision; nil while checking
	// linearizability, where such reads are left unchecked (see rangeResult).
	past pastStates
}

// pastStates gives the state as it was when revision rev was first reached,
// or nil if it is not known.
type pastStates interface {
	stateAt(rev int64) *state
}

// event is one change, as a watcher would see it.
type event struct {
	typ      mvccpb.Event_EventType
	kv       keyValue  // for DELETE: key and modRevision (the deletion revision) only, as etcd sends it
	prevKV   *keyValue // the key before the change; nil if it did not exist
	revision int64
}

func (e event) String() string {
	if e.typ == mvccpb.DELETE {
		return "DELETE " + quote(e.kv.key) + "@" + strconv.FormatInt(e.revision, 10)
	}
	return "PUT " + e.kv.String()
}

// recorder collects the events of one apply; nil when nobody needs them.
type recorder struct {
	events []event
}

func (rec *recorder) add(e event) {
	if rec != nil {
		rec.events = append(rec.events, e)
	}
}

// apply executes r on s. It returns the state after it (s itself when nothing
// changed) and the response a correct server gives.
func apply(s *state, r *request, cfg *applyConfig, rec *recorder) (*state, *response) {
	switch r.kind {
	case kindRange:
		res, err := rangeAt(s, s, r.rng, cfg)
		if err != errNone {
			return s, &response{kind: kindRange, err: err}
		}
		return s, &response{kind: kindRange, revision: s.revision, rng: res}
	case kindPut:
		return applyPut(s, r.put, rec)
	case kindDeleteRange:
		w := &writer{base: s}
		resp := w.deleteRange(r.del, rec)
		next := w.finish()
		resp.revision = next.revision
		return next, resp
	case kindTxn:
		return applyTxn(s, r.txn, cfg, rec)
	case kindCompact:
		// mvcc's updateCompactRev.
		switch {
		case r.compactRev <= s.compactRevision:
			return s, &response{kind: kindCompact, err: errCompacted}
		case r.compactRev > s.revision:
			return s, &response{kind: kindCompact, err: errFutureRev}
		}
		next := *s
		next.compactRevision = r.compactRev
		return &next, &response{kind: kindCompact, revision: s.revision}
	case kindLeaseGrant:
		// lessor.Grant's checks, in its order. etcd picks the ID of a grant
		// that asks for 0 before proposing it, so it never applies ID 0;
		// noded proposes the 0 and its store picks at apply, as here: the
		// lowest free ID at or above a counter that only grows.
		if r.leaseTTL > maxLeaseTTLSeconds {
			return s, &response{kind: kindLeaseGrant, err: errLeaseTTLTooLarge}
		}
		id := r.leaseID
		next := *s
		if id == 0 {
			id = s.nextLeaseID
			for s.hasLease(id) {
				id++
			}
			next.nextLeaseID = id + 1
		} else if s.hasLease(id) {
			return s, &response{kind: kindLeaseGrant, err: errLeaseExist}
		}
		next.leases = append([]int64(nil), s.leases...)
		next.addLease(id)
		return &next, &response{kind: kindLeaseGrant, revision: s.revision, leaseID: id,
			leaseTTL: max(r.leaseTTL, cfg.minLeaseTTL)}
	case kindLeaseRevoke:
		if !s.hasLease(r.leaseID) {
			return s, &response{kind: kindLeaseRevoke, err: errLeaseNotFound}
		}
		// lessor.Revoke deletes the attached keys in key order, in one txn.
		w := &writer{base: s}
		for _, kv := range s.keys {
			if kv.lease == r.leaseID {
				w.remove(kv, rec)
			}
		}
		m := w.mutable()
		m.removeLease(r.leaseID)
		next := w.finish()
		return next, &response{kind: kindLeaseRevoke, revision: next.revision}
	}
	return s, &response{kind: kindNone, revision: s.revision}
}

// writer builds the state after one write txn: it copies the base state on
// the first change and bumps the revision once at the end if any key
// changed, as etcd gives all writes of a txn one revision.
type writer struct {
	base    *state
	next    *state // nil until the first change
	changed bool   // a key was put or deleted
}

// view is the state as the txn sees it so far (its own writes included).
func (w *writer) view() *state {
	if w.next != nil {
		return w.next
	}
	return w.base
}

func (w *writer) mutable() *state {
	if w.next == nil {
		w.next = w.base.clone()
	}
	return w.next
}

// writeRevision is the revision every change of this txn gets.
func (w *writer) writeRevision() int64 { return w.base.revision + 1 }

// revision is what a response within the txn reports: the write revision
// once anything changed, else the revision before.
func (w *writer) revision() int64 {
	if w.changed {
		return w.writeRevision()
	}
	return w.base.revision
}

func (w *writer) put(kv keyValue, prev *keyValue, rec *recorder) {
	w.mutable().set(kv)
	w.changed = true
	rec.add(event{typ: mvccpb.PUT, kv: kv, prevKV: prev, revision: kv.modRevision})
}

func (w *writer) remove(old keyValue, rec *recorder) {
	w.mutable().remove(old.key)
	w.changed = true
	prev := old
	rev := w.writeRevision()
	rec.add(event{typ: mvccpb.DELETE, kv: keyValue{key: old.key, modRevision: rev}, prevKV: &prev, revision: rev})
}

func (w *writer) finish() *state {
	if w.next == nil {
		return w.base
	}
	if w.changed {
		w.next.revision = w.base.revision + 1
	}
	return w.next
}

// applyPut is mvcctxn.Put: lease first, then ignore_* on a missing key;
// kvsm checks the two the other way round, so a put breaking both may be
// refused for either.
func applyPut(s *state, p *putOp, rec *recorder) (*state, *response) {
	missingLease := p.lease != 0 && !s.hasLease(p.lease)
	missingKey := (p.ignoreValue || p.ignoreLease) && !hasKey(s, p.key)
	switch {
	case missingLease && missingKey:
		return s, &response{kind: kindPut, err: errLeaseNotFound, altErr: errKeyNotFound}
	case missingLease:
		return s, &response{kind: kindPut, err: errLeaseNotFound}
	case missingKey:
		return s, &response{kind: kindPut, err: errKeyNotFound}
	}
	w := &writer{base: s}
	resp := w.putOne(p, rec)
	next := w.finish()
	resp.revision = next.revision
	return next, resp
}

func hasKey(s *state, key string) bool {
	_, ok := s.find(key)
	return ok
}

// putOne writes one put into the txn being built; its checks are done.
func (w *writer) putOne(p *putOp, rec *recorder) *response {
	old, exists := w.view().get(p.key)
	rev := w.writeRevision()
	kv := keyValue{key: p.key, value: p.value, createRevision: rev, modRevision: rev, version: 1, lease: p.lease}
	if exists {
		kv.createRevision = old.createRevision
		kv.version = old.version + 1
		if p.ignoreValue {
			kv.value = old.value
		}
		if p.ignoreLease {
			kv.lease = old.lease
		}
	}
	resp := &response{kind: kindPut, revision: rev}
	var prev *keyValue
	if exists {
		o := old
		prev = &o
		if p.prevKV {
			resp.prevKV = prev
		}
	}
	w.put(kv, prev, rec)
	return resp
}

// deleteRange deletes the live keys in d's range from the txn being built.
func (w *writer) deleteRange(d *deleteOp, rec *recorder) *response {
	victims := w.view().inRange(d.keys)
	resp := &response{kind: kindDeleteRange, deleted: int64(len(victims))}
	if d.prevKV && len(victims) > 0 {
		resp.prevKVs = append([]keyValue(nil), victims...)
	}
	// Copy before removing: victims aliases the view's keys.
	for _, kv := range append([]keyValue(nil), victims...) {
		w.remove(kv, rec)
	}
	resp.revision = w.revision()
	return resp
}

// applyTxn is etcd's Txn: every compare, nested ones included, is evaluated
// on the state before the txn (compareToPath); a txn that may write is then
// checked as a whole on that state (checkTxn) and refused with no effect if
// any op on the chosen path would fail; then the ops run in order, each
// seeing the writes before it.
func applyTxn(s *state, t *txnOp, cfg *applyConfig, rec *recorder) (*state, *response) {
	if !t.readOnly {
		if err := checkTxn(s, t); err != errNone {
			return s, &response{kind: kindTxn, err: err}
		}
	}
	w := &writer{base: s}
	res, err := w.executeTxn(t, cfg, rec)
	if err != errNone {
		// Only a read-only txn gets here: a range at a compacted or future
		// revision, which checkTxn catches for writing txns.
		return s, &response{kind: kindTxn, err: err}
	}
	next := w.finish()
	return next, &response{kind: kindTxn, revision: next.revision, txn: res}
}

// executeTxn runs t's chosen branch; every compare, nested ones included,
// sees the state before the txn (w.base).
func (w *writer) executeTxn(t *txnOp, cfg *applyConfig, rec *recorder) (*txnResult, errorKind) {
	pre := w.base
	succeeded := applyCompares(pre, t.compares)
	ops := t.success
	if !succeeded {
		ops = t.failure
	}
	res := &txnResult{succeeded: succeeded, responses: make([]*response, len(ops))}
	for i, op := range ops {
		switch op.kind {
		case kindRange:
			view := w.view()
			rr, err := rangeAt(view, pre, op.rng, cfg)
			if err != errNone {
				return nil, err
			}
			res.responses[i] = &response{kind: kindRange, revision: w.revision(), rng: rr}
		case kindPut:
			res.responses[i] = w.putOne(op.put, rec)
		case kindDeleteRange:
			res.responses[i] = w.deleteRange(op.del, rec)
		case kindTxn:
			sub, err := w.executeTxn(op.txn, cfg, rec)
			if err != errNone {
				return nil, err
			}
			// etcd leaves a nested txn's header empty.
			res.responses[i] = &response{kind: kindTxn, txn: sub}
		default:
			res.responses[i] = &response{kind: kindNone}
		}
	}
	return res, errNone
}

// checkTxn is etcd's checkTxn on the ops of the chosen path: ranges at a
// future or compacted revision, puts with ignore_* on a missing key (checked
// before the lease here, unlike a plain Put), puts on a missing lease.
func checkTxn(pre *state, t *txnOp) errorKind {
	ops := t.success
	if !applyCompares(pre, t.compares) {
		ops = t.failure
	}
	for _, op := range ops {
		switch op.kind {
		case kindRange:
			rev := op.rng.revision
			switch {
			case rev == 0:
			case rev > pre.revision:
				return errFutureRev
			case rev < pre.compactRevision:
				return errCompacted
			}
		case kindPut:
			p := op.put
			if (p.ignoreValue || p.ignoreLease) && !hasKey(pre, p.key) {
				return errKeyNotFound
			}
			if p.lease != 0 && !pre.hasLease(p.lease) {
				return errLeaseNotFound
			}
		case kindTxn:
			if err := checkTxn(pre, op.txn); err != errNone {
				return err
			}
		}
	}
	return errNone
}

// applyCompares ANDs the compares. A compare over a range holds only if it
// holds for every key in it; over no key at all, a VALUE compare fails and
// the others compare against zero (etcd's applyCompare).
func applyCompares(s *state, cs []compareOp) bool {
	for i := range cs {
		if !applyCompare(s, &cs[i]) {
			return false
		}
	}
	return true
}

func applyCompare(s *state, c *compareOp) bool {
	kvs := s.inRange(c.keys)
	if len(kvs) == 0 {
		if c.target == pb.Compare_VALUE {
			return false
		}
		return compareKV(c, keyValue{})
	}
	for _, kv := range kvs {
		if !compareKV(c, kv) {
			return false
		}
	}
	return true
}

func compareKV(c *compareOp, kv keyValue) bool {
	var result int
	switch c.target {
	case pb.Compare_VALUE:
		result = cmp.Compare(kv.value, c.value)
	case pb.Compare_CREATE:
		result = cmp.Compare(kv.createRevision, c.number)
	case pb.Compare_MOD:
		result = cmp.Compare(kv.modRevision, c.number)
	case pb.Compare_VERSION:
		result = cmp.Compare(kv.version, c.number)
	case pb.Compare_LEASE:
		result = cmp.Compare(kv.lease, c.number)
	}
	switch c.result {
	case pb.Compare_EQUAL:
		return result == 0
	case pb.Compare_NOT_EQUAL:
		return result != 0
	case pb.Compare_GREATER:
		return result > 0
	case pb.Compare_LESS:
		return result < 0
	}
	return true
}

// rangeAt answers a range on view (the current state, or a txn's state so
// far). pre is the state before the txn, which is the state at the txn's
// start revision. A range at a past revision is answered from cfg.past, or
// left unchecked without one.
func rangeAt(view, pre *state, r *rangeOp, cfg *applyConfig) (*rangeResult, errorKind) {
	src := view
	if r.revision > 0 {
		// mvcc's rangeKeys: a future revision first, then compaction.
		if r.revision > view.revision {
			return nil, errFutureRev
		}
		if r.revision < view.compactRevision {
			return nil, errCompacted
		}
		switch {
		case r.revision == view.revision && view == pre:
			src = view
		case r.revision == pre.revision:
			src = pre
		case cfg.past != nil:
			src = cfg.past.stateAt(r.revision)
		default:
			src = nil
		}
		if src == nil {
			return &rangeResult{unchecked: true}, errNone
		}
	}
	return rangeOf(src, r), errNone
}

// rangeOf is etcd's Range on one state: count is every key in the range,
// before filters and limit; filters prune; the sort is applied; the limit
// cuts; more says the cut dropped something.
func rangeOf(s *state, r *rangeOp) *rangeResult {
	all := s.inRange(r.keys)
	res := &rangeResult{count: int64(len(all)), keysOnly: r.keysOnly}
	if r.countOnly {
		return res
	}
	candidates := all
	if r.minMod != 0 || r.maxMod != 0 || r.minCreate != 0 || r.maxCreate != 0 {
		candidates = make([]keyValue, 0, len(all))
		for _, kv := range all {
			if (r.maxMod != 0 && kv.modRevision > r.maxMod) || (r.minMod != 0 && kv.modRevision < r.minMod) ||
				(r.maxCreate != 0 && kv.createRevision > r.maxCreate) || (r.minCreate != 0 && kv.createRevision < r.minCreate) {
				continue
			}
			candidates = append(candidates, kv)
		}
	}
	order := r.sortOrder
	target := sortByKey
	switch r.sortTarget {
	case pb.RangeRequest_VERSION:
		target = sortByVersion
	case pb.RangeRequest_CREATE:
		target = sortByCreate
	case pb.RangeRequest_MOD:
		target = sortByMod
	case pb.RangeRequest_VALUE:
		target = sortByValue
	}
	if target != sortByKey && order == pb.RangeRequest_NONE {
		order = pb.RangeRequest_ASCEND
	}
	switch {
	case order == pb.RangeRequest_DESCEND:
		candidates = append([]keyValue(nil), candidates...)
		slices.SortStableFunc(candidates, func(a, b keyValue) int { return compareSortKey(target, b, a) })
	case order == pb.RangeRequest_ASCEND && target != sortByKey:
		candidates = append([]keyValue(nil), candidates...)
		slices.SortStableFunc(candidates, func(a, b keyValue) int { return compareSortKey(target, a, b) })
	}
	if target != sortByKey {
		res.sortTarget = target
	}
	res.candidates = candidates
	res.n = len(candidates)
	if r.limit > 0 && int64(len(candidates)) > r.limit {
		res.n = int(r.limit)
		res.more = true
	}
	res.kvs = candidates[:res.n]
	return res
}

func compareSortKey(target rangeSortTarget, a, b keyValue) int {
	switch target {
	case sortByVersion:
		return cmp.Compare(a.version, b.version)
	case sortByCreate:
		return cmp.Compare(a.createRevision, b.createRevision)
	case sortByMod:
		return cmp.Compare(a.modRevision, b.modRevision)
	case sortByValue:
		return cmp.Compare(a.value, b.value)
	}
	return cmp.Compare(a.key, b.key)
}

package kvsm

import (
	"math"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
)

// ApplyResult is what applying one committed entry produced.
type ApplyResult struct {
	// Resp is *pb.PutResponse, *pb.DeleteRangeResponse, *pb.TxnResponse,
	// *pb.CompactionResponse, *pb.LeaseGrantResponse,
	// *pb.LeaseRevokeResponse, *pb.AlarmResponse or *pb.RangeResponse, with
	// Header.Revision set; nil when Err is set.
	Resp proto.Message
	// Err is an rpctypes.ErrGRPC* value (compare with ==) or nil. When it is
	// set the store did not change.
	Err error
	// Rev is the store revision after applying.
	Rev int64
	// Events are the changes, in (main, sub) order; nil when none. They
	// carry no prev_kv. The caller may keep them; they are read-only.
	Events []*mvccpb.Event
}

// Apply applies one committed entry's request. It is deterministic and
// total: any request, even one that never passed Validate, yields a result,
// and a result with Err set left the store unchanged. It handles Put,
// DeleteRange, Txn, Compaction, LeaseGrant, LeaseRevoke and Alarm (and Range,
// as a read at this point of the log), and the auth requests. When several
// fields are set the first in that order wins, as in etcd's applier.
// Anything else fails with ErrGRPCNotCapable.
//
// With auth on, a key-value request is checked against the permissions of
// the user in its header (auth.go) before it touches anything, as etcd's
// auth applier does; a refusal (PermissionDenied, AuthOldRevision,
// UserEmpty) is an Err like any other. Compaction and the admin-only
// requests outside auth are checked by the API layer, as in etcd.
//
// Config-independent structural checks of Validate are repeated here (empty
// key, sort options, duplicate keys in a txn...), so a request that slipped
// past Validate cannot break an invariant. TooManyOps is not: it depends on
// the member's configuration.
func (s *Store) Apply(r *pb.InternalRaftRequest) ApplyResult {
	if r == nil {
		return s.failed(rpctypes.ErrGRPCNotCapable)
	}
	if isAuthRequest(r) {
		// Auth requests pass a corrupt or full store, as in etcd, whose
		// corrupt and quota appliers guard only the key-value requests.
		return s.applyAuth(r)
	}
	if r.GetAlarm() != nil && r.GetRange() == nil && r.GetPut() == nil && r.GetDeleteRange() == nil &&
		r.GetTxn() == nil && r.GetCompaction() == nil && r.GetLeaseGrant() == nil && r.GetLeaseRevoke() == nil {
		// Alarms are applied even on a corrupt store, so they can be cleared.
		return s.applyAlarm(r.GetAlarm())
	}
	if s.kv.corrupt {
		return s.failed(rpctypes.ErrGRPCCorrupt)
	}
	noSpace := s.alarmActive(pb.AlarmType_NOSPACE)
	ai := requestAuthInfo(r)
	switch {
	case r.GetRange() != nil:
		if err := s.auth.checkRange(ai, r.GetRange().GetKey(), r.GetRange().GetRangeEnd()); err != nil {
			return s.failed(err)
		}
		resp, err := s.Range(r.GetRange())
		if err != nil {
			return s.failed(err)
		}
		return ApplyResult{Resp: resp, Rev: s.kv.rev}
	case r.GetPut() != nil:
		if noSpace {
			return s.failed(rpctypes.ErrGRPCNoSpace)
		}
		if err := s.auth.checkPut(ai, r.GetPut(), s.leaseKeys); err != nil {
			return s.failed(err)
		}
		return s.applyPut(r.GetPut())
	case r.GetDeleteRange() != nil:
		if err := s.auth.checkDelete(ai, r.GetDeleteRange()); err != nil {
			return s.failed(err)
		}
		return s.applyDeleteRange(r.GetDeleteRange())
	case r.GetTxn() != nil:
		if noSpace && txnPuts(r.GetTxn()) {
			return s.failed(rpctypes.ErrGRPCNoSpace)
		}
		if err := s.auth.checkTxn(ai, r.GetTxn(), s.leaseKeys, s.cfg.PlantedAuthSkipTxnCompares); err != nil {
			return s.failed(err)
		}
		return s.applyTxn(r.GetTxn())
	case r.GetCompaction() != nil:
		return s.applyCompaction(r.GetCompaction())
	case r.GetLeaseGrant() != nil:
		if noSpace {
			return s.failed(rpctypes.ErrGRPCNoSpace)
		}
		return s.applyLeaseGrant(r.GetLeaseGrant())
	case r.GetLeaseRevoke() != nil:
		if err := s.auth.checkLeaseKeys(ai, r.GetLeaseRevoke().GetID(), s.leaseKeys); err != nil {
			return s.failed(err)
		}
		return s.applyLeaseRevoke(r.GetLeaseRevoke())
	}
	return s.failed(rpctypes.ErrGRPCNotCapable)
}

// ApplyOwned is Apply for a request whose bytes nothing else holds or will
// change (one just decoded from a log entry): the store keeps its keys and
// values as they are rather than copying them, so that each value lives in
// memory once. Apply copies them.
func (s *Store) ApplyOwned(r *pb.InternalRaftRequest) ApplyResult {
	s.ownsRequest = true
	res := s.Apply(r)
	s.ownsRequest = false
	return res
}

// keep returns p for the store to keep: p itself when the request being
// applied is the store's (ApplyOwned), a copy otherwise.
func (s *Store) keep(p []byte) []byte {
	if s.ownsRequest && p != nil {
		return p
	}
	return cloneBytes(p)
}

func (s *Store) failed(err error) ApplyResult {
	return ApplyResult{Err: err, Rev: s.kv.rev}
}

func (s *Store) header() *pb.ResponseHeader {
	return &pb.ResponseHeader{Revision: s.kv.rev}
}

// txnPuts reports whether any branch of t, at any depth, puts. Under a
// NOSPACE alarm such a txn fails (etcd's quota counts only the top level;
// a nested put grows the store just the same).
func txnPuts(t *pb.TxnRequest) bool {
	return txnAnyOp(t, func(op *pb.RequestOp) bool { return op.GetRequestPut() != nil })
}

// txnAnyOp reports whether any op of t, in either branch and at any depth
// of nested txns, satisfies is.
func txnAnyOp(t *pb.TxnRequest, is func(*pb.RequestOp) bool) bool {
	for _, ops := range [][]*pb.RequestOp{t.GetSuccess(), t.GetFailure()} {
		for _, op := range ops {
			if is(op) {
				return true
			}
			if nested := op.GetRequestTxn(); nested != nil && txnAnyOp(nested, is) {
				return true
			}
		}
	}
	return false
}

// writeTxn collects the changes of one main revision. Changes go into the
// key tree as they are made, so later operations of a txn read them, as in
// etcd; every check that could fail runs before the first change, so a
// writeTxn never needs to roll back.
type writeTxn struct {
	s        *Store
	beginRev int64
	changes  []change
	first    [1]change // backs changes for the common one-change write
}

type change struct {
	key []byte
	rev *keyRev // in the key's entry
}

// cloneBytes copies p into a fresh, never-nil slice without zeroing it
// first (append skips the clear that make would do).
func cloneBytes(p []byte) []byte {
	if len(p) == 0 {
		return []byte{}
	}
	return append([]byte(nil), p...)
}

func (s *Store) beginWrite() *writeTxn {
	w := &writeTxn{s: s, beginRev: s.kv.rev}
	w.changes = w.first[:0]
	return w
}

// readRev is the revision a read inside the txn sees as current.
func (w *writeTxn) readRev() int64 {
	if len(w.changes) > 0 {
		return w.beginRev + 1
	}
	return w.beginRev
}

func (w *writeTxn) nextRev() (main int64, sub int32) {
	assert(len(w.changes) < 1<<31-1, "too many changes in one revision")
	return w.beginRev + 1, int32(len(w.changes))
}

// put stores a new revision of key, whose entry is old (nil if the key
// was never written or was compacted away), and moves its lease attachment.
func (w *writeTxn) put(old *keyEntry, key, value []byte, leaseID int64) {
	s := w.s
	main, sub := w.nextRev()
	rev := keyRev{modMain: main, modSub: sub, createMain: main, version: 1, lease: leaseID}
	rev.setValue(s.keep(value))
	oldLease := int64(0)
	var next *keyEntry
	if old != nil {
		if cur, ok := old.live(); ok {
			rev.createMain = cur.createMain
			rev.version = cur.version + 1
			oldLease = cur.lease
		}
		next = &keyEntry{key: old.key, revs: append(old.revs, rev)}
	} else {
		next = newKeyEntry(s.keep(key), rev)
	}
	s.kv.keys.SetHint(next, &s.hint)
	w.record(next)
	if oldLease != leaseID {
		if oldLease != 0 {
			s.detach(oldLease, next.key)
		}
		if leaseID != 0 {
			s.attach(leaseID, next.key)
		}
	}
}

// deleteKey stores a tombstone for a live key and detaches its lease.
func (w *writeTxn) deleteKey(old *keyEntry) {
	s := w.s
	cur, ok := old.live()
	assert(ok, "delete of a key that is not live: %q", old.key)
	main, sub := w.nextRev()
	if cur.lease != 0 {
		s.detach(cur.lease, old.key)
	}
	next := &keyEntry{key: old.key, revs: append(old.revs, keyRev{modMain: main, modSub: sub})}
	s.kv.keys.SetHint(next, &s.hint)
	w.record(next)
}

func (w *writeTxn) record(e *keyEntry) {
	r := e.latest()
	w.s.revLog.append(revLogEntry{main: r.modMain, sub: r.modSub, key: e.key})
	w.s.sizeBytes += revSizeBytes(e.key, r)
	w.changes = append(w.changes, change{key: e.key, rev: r})
}

// deleteRange tombstones every key live in the span and returns their
// entries as they were before: entries are immutable, so each still holds
// the key's previous value as its latest revision.
func (w *writeTxn) deleteRange(sp keySpan) []*keyEntry {
	var doomed []*keyEntry
	w.s.kv.ascend(sp, &w.s.probe, func(e *keyEntry) bool {
		if _, ok := e.live(); ok {
			doomed = append(doomed, e)
		}
		return true
	})
	for _, e := range doomed {
		w.deleteKey(e)
	}
	return doomed
}

// end commits the revision (if anything changed), feeds the watchers and
// returns the events.
func (w *writeTxn) end() []*mvccpb.Event {
	if len(w.changes) == 0 {
		return nil
	}
	s := w.s
	s.kv.rev = w.beginRev + 1
	events := make([]*mvccpb.Event, len(w.changes))
	for i, c := range w.changes {
		events[i] = newEvent(c.key, c.rev)
	}
	s.watchNotify(s.kv.rev, events)
	return events
}

func newEvent(key []byte, r *keyRev) *mvccpb.Event {
	// One allocation for the event and its KeyValue.
	type eventWithKV struct {
		ev mvccpb.Event
		kv mvccpb.KeyValue
	}
	x := &eventWithKV{}
	x.ev.Kv = &x.kv
	if r.tombstone() {
		x.ev.Type = mvccpb.Event_DELETE
		x.kv.Key = key
		x.kv.ModRevision = r.modMain
		return &x.ev
	}
	x.ev.Type = mvccpb.Event_PUT
	fillKeyValue(&x.kv, key, r)
	return &x.ev
}

// checkPut makes etcd's apply-time checks of a put against the state before
// the write: ignore_* needs the key, a lease must exist.
func (s *Store) checkPut(p *pb.PutRequest) error {
	if p.GetIgnoreValue() || p.GetIgnoreLease() {
		e := s.lookup(p.GetKey())
		if e == nil {
			return rpctypes.ErrGRPCKeyNotFound
		}
		if _, ok := e.live(); !ok {
			return rpctypes.ErrGRPCKeyNotFound
		}
	}
	if id := p.GetLease(); id != 0 && s.getLease(id) == nil {
		return rpctypes.ErrGRPCLeaseNotFound
	}
	return nil
}

// execPut runs a checked put inside w, as etcd's txn.put.
func (w *writeTxn) execPut(p *pb.PutRequest) *pb.PutResponse {
	resp := &pb.PutResponse{Header: &pb.ResponseHeader{}}
	value, leaseID := p.GetValue(), p.GetLease()
	e := w.s.lookup(p.GetKey())
	if e != nil {
		if cur, ok := e.live(); ok {
			if p.GetIgnoreValue() {
				value = cur.value()
			}
			if p.GetIgnoreLease() {
				leaseID = cur.lease
			}
			if p.GetPrevKv() {
				resp.PrevKv = newKeyValue(e.key, cur)
			}
		}
	}
	w.put(e, p.GetKey(), value, leaseID)
	resp.Header.Revision = w.beginRev + 1
	return resp
}

// execDeleteRange runs a delete inside w, as etcd's txn.deleteRange.
func (w *writeTxn) execDeleteRange(d *pb.DeleteRangeRequest) *pb.DeleteRangeResponse {
	resp := &pb.DeleteRangeResponse{Header: &pb.ResponseHeader{}}
	deleted := w.deleteRange(makeSpan(d.GetKey(), d.GetRangeEnd()))
	if d.GetPrevKv() {
		refs := make([]kvRef, len(deleted))
		for i, e := range deleted {
			refs[i] = kvRef{key: e.key, rev: e.latest()}
		}
		resp.PrevKvs = keyValues(refs, false)
	}
	resp.Deleted = int64(len(deleted))
	resp.Header.Revision = w.readRev()
	return resp
}

func (s *Store) applyPut(p *pb.PutRequest) ApplyResult {
	if err := checkPutRequest(p); err != nil {
		return s.failed(err)
	}
	// A plain Put checks its lease before anything else (etcd's txn.Put);
	// inside a txn the key comes first (checkPut).
	if id := p.GetLease(); id != 0 && s.getLease(id) == nil {
		return s.failed(rpctypes.ErrGRPCLeaseNotFound)
	}
	if err := s.checkPut(p); err != nil {
		return s.failed(err)
	}
	w := s.beginWrite()
	resp := w.execPut(p)
	events := w.end()
	return ApplyResult{Resp: resp, Rev: s.kv.rev, Events: events}
}

func (s *Store) applyDeleteRange(d *pb.DeleteRangeRequest) ApplyResult {
	if err := checkDeleteRequest(d); err != nil {
		return s.failed(err)
	}
	w := s.beginWrite()
	resp := w.execDeleteRange(d)
	events := w.end()
	return ApplyResult{Resp: resp, Rev: s.kv.rev, Events: events}
}

// applyTxn applies a txn as etcd's txn.Txn: compares (nested ones too)
// against the state before the txn, then checks of the chosen branches, then
// the writes at one revision. A txn that fails a check changes nothing.
func (s *Store) applyTxn(t *pb.TxnRequest) ApplyResult {
	if err := checkTxnRequest(t, math.MaxInt); err != nil {
		return s.failed(err)
	}
	if err := checkTxnDuplicates(t); err != nil {
		return s.failed(err)
	}
	path := s.kv.txnPath(t, &s.probe, nil)
	if _, err := s.checkTxnPath(t, path); err != nil {
		return s.failed(err)
	}
	w := s.beginWrite()
	resp, rest := w.execTxn(t, path)
	assert(len(rest) == 0, "txn path has %d unused outcomes", len(rest))
	events := w.end()
	resp.Header.Revision = s.kv.rev
	return ApplyResult{Resp: resp, Rev: s.kv.rev, Events: events}
}

// checkTxnPath adds the put checks (lease, ignore_*) to
// kvState.checkTxnPath.
func (s *Store) checkTxnPath(t *pb.TxnRequest, path []bool) ([]bool, error) {
	return s.kv.checkTxnPathWith(t, path, s.checkPut)
}

// execTxn runs the chosen branch. Nested txn responses keep an empty header,
// as etcd leaves them.
func (w *writeTxn) execTxn(t *pb.TxnRequest, path []bool) (*pb.TxnResponse, []bool) {
	ok := path[0]
	path = path[1:]
	ops := branch(t, ok)
	resp := &pb.TxnResponse{Header: &pb.ResponseHeader{}, Succeeded: ok, Responses: make([]*pb.ResponseOp, len(ops))}
	for i, op := range ops {
		switch {
		case op.GetRequestRange() != nil:
			rr, err := w.s.kv.rangeAt(op.GetRequestRange(), w.readRev(), &w.s.probe)
			assert(err == nil, "txn range failed after its checks passed: %v", err)
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: rr}}
		case op.GetRequestPut() != nil:
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: w.execPut(op.GetRequestPut())}}
		case op.GetRequestDeleteRange() != nil:
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: w.execDeleteRange(op.GetRequestDeleteRange())}}
		case op.GetRequestTxn() != nil:
			var nested *pb.TxnResponse
			nested, path = w.execTxn(op.GetRequestTxn(), path)
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: nested}}
		default:
			resp.Responses[i] = &pb.ResponseOp{}
		}
	}
	return resp, path
}

// applyCompaction drops history below rev: every key keeps its newest
// revision at or below rev unless that is a tombstone older than rev (a
// tombstone exactly at rev stays, as in etcd since 3.5.16, so a watch from
// rev still sees the delete). Reads at rev still see the state as of rev.
func (s *Store) applyCompaction(c *pb.CompactionRequest) ApplyResult {
	rev := c.GetRevision()
	if rev <= s.kv.compactRev {
		return s.failed(rpctypes.ErrGRPCCompacted)
	}
	if rev > s.kv.rev {
		return s.failed(rpctypes.ErrGRPCFutureRev)
	}
	s.compact(rev)
	return ApplyResult{Resp: &pb.CompactionResponse{Header: s.header()}, Rev: s.kv.rev}
}

func (s *Store) compact(atRev int64) {
	// The log holds every revision at or above the previous compaction, so
	// every key this compaction can trim appears in it: a key whose newest
	// revision is older than that is already as short as it can be (a
	// tombstone is kept only exactly at the compact revision, which is in
	// the log). compactKey leaves a key it has already trimmed alone.
	// What stays in the log is the revisions at atRev itself: each is its
	// key's newest at or below atRev, which compaction always keeps.
	s.revLog.compact(atRev, func(le *revLogEntry) bool {
		e := s.lookup(le.key)
		if e == nil {
			// This compaction already dropped the whole key.
			return false
		}
		return s.compactKey(e, atRev) != nil && le.main == atRev
	})
	s.kv.compactRev = atRev
}

// compactKey trims one key's history for a compaction at atRev and returns
// its new entry, or nil if the key is gone.
func (s *Store) compactKey(e *keyEntry, atRev int64) *keyEntry {
	from := compactFrom(e.revs, e.indexAt(atRev), atRev)
	if from == 0 {
		return e
	}
	for j := range e.revs[:from] {
		s.sizeBytes -= revSizeBytes(e.key, &e.revs[j])
	}
	if from == len(e.revs) {
		s.kv.keys.Delete(e)
		return nil
	}
	next := &keyEntry{key: e.key, revs: slices.Clone(e.revs[from:])}
	s.kv.keys.Set(next)
	return next
}

package kvsm

import (
	"bytes"
	"cmp"
	"errors"
	"math"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// keySpan is a request's key and range_end, read the way etcd reads them:
// an empty range_end names one key, "\x00" means every key at or after key,
// anything else is the half-open interval [key, range_end).
type keySpan struct {
	key  []byte
	end  []byte // exclusive; unused when single or open
	kind spanKind
}

type spanKind uint8

const (
	spanSingle spanKind = iota
	spanInterval
	spanFrom // every key >= key
)

func makeSpan(key, rangeEnd []byte) keySpan {
	switch {
	case len(rangeEnd) == 0:
		return keySpan{key: key, kind: spanSingle}
	case len(rangeEnd) == 1 && rangeEnd[0] == 0:
		return keySpan{key: key, kind: spanFrom}
	default:
		return keySpan{key: key, end: rangeEnd, kind: spanInterval}
	}
}

func (sp keySpan) contains(k []byte) bool {
	switch sp.kind {
	case spanSingle:
		return bytes.Equal(k, sp.key)
	case spanFrom:
		return bytes.Compare(k, sp.key) >= 0
	default:
		return bytes.Compare(k, sp.key) >= 0 && bytes.Compare(k, sp.end) < 0
	}
}

// ascend calls fn for each entry whose key lies in the span, in key order,
// until fn returns false. probe is a scratch entry for the tree lookup.
func (kv *kvState) ascend(sp keySpan, probe *keyEntry, fn func(e *keyEntry) bool) {
	probe.key = sp.key
	defer func() { probe.key = nil }()
	if sp.kind == spanSingle {
		if e, ok := kv.keys.Get(probe); ok {
			fn(e)
		}
		return
	}
	kv.keys.Ascend(probe, func(e *keyEntry) bool {
		if sp.kind == spanInterval && bytes.Compare(e.key, sp.end) >= 0 {
			return false
		}
		return fn(e)
	})
}

// kvRef is one key's revision as a read sees it, before it becomes a
// KeyValue message.
type kvRef struct {
	key []byte
	rev *keyRev
}

func fillKeyValue(kv *mvccpb.KeyValue, key []byte, r *keyRev) {
	kv.Key = key
	kv.CreateRevision = r.createMain
	kv.ModRevision = r.modMain
	kv.Version = r.version
	kv.Value = r.value()
	kv.Lease = r.lease
}

func newKeyValue(key []byte, r *keyRev) *mvccpb.KeyValue {
	kv := &mvccpb.KeyValue{}
	fillKeyValue(kv, key, r)
	return kv
}

// keyValues turns refs into messages with two allocations in all. The
// messages share key and value bytes with the store: callers must treat
// them as read-only (the store never changes them either).
func keyValues(refs []kvRef, keysOnly bool) []*mvccpb.KeyValue {
	out := make([]*mvccpb.KeyValue, len(refs))
	if len(refs) == 0 {
		return out
	}
	backing := make([]mvccpb.KeyValue, len(refs))
	for i := range refs {
		fillKeyValue(&backing[i], refs[i].key, refs[i].rev)
		if keysOnly {
			backing[i].Value = nil
		}
		out[i] = &backing[i]
	}
	return out
}

// rangeAt answers a RangeRequest against the state, as etcd's
// executeRange does. curRev is the revision the read sees as current: the
// store revision, or one more inside a write txn that already wrote.
func (kv *kvState) rangeAt(r *pb.RangeRequest, curRev int64, probe *keyEntry) (*pb.RangeResponse, error) {
	atRev, err := kv.readRev(r.GetRevision(), curRev)
	if err != nil {
		return nil, err
	}
	sp := makeSpan(r.GetKey(), r.GetRangeEnd())
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: curRev}}

	if r.GetCountOnly() {
		var total int64
		kv.ascend(sp, probe, func(e *keyEntry) bool {
			if _, ok := e.at(atRev); ok {
				total++
			}
			return true
		})
		resp.Count = total
		resp.Kvs = []*mvccpb.KeyValue{}
		return resp, nil
	}

	// Like etcd: fetch one extra to learn `more`, and fetch everything when
	// sorting or filtering decides what survives the limit.
	fetch := r.GetLimit()
	if !isDefaultOrdering(r.GetSortTarget(), r.GetSortOrder()) || hasRevisionFilters(r) {
		fetch = 0
	}
	if fetch > 0 && fetch < math.MaxInt64 {
		fetch++
	}
	var refs []kvRef
	var total int64
	kv.ascend(sp, probe, func(e *keyEntry) bool {
		rev, ok := e.at(atRev)
		if !ok {
			return true
		}
		if fetch <= 0 || int64(len(refs)) < fetch {
			refs = append(refs, kvRef{key: e.key, rev: rev})
		}
		total++
		return true
	})
	resp.Count = total

	refs = filterRefs(refs, r)
	sortRefs(refs, r)
	if limit := r.GetLimit(); limit > 0 && int64(len(refs)) > limit {
		refs = refs[:limit]
		resp.More = true
	}
	resp.Kvs = keyValues(refs, r.GetKeysOnly())
	return resp, nil
}

func isDefaultOrdering(target pb.RangeRequest_SortTarget, order pb.RangeRequest_SortOrder) bool {
	return order == pb.RangeRequest_NONE || (target == pb.RangeRequest_KEY && order == pb.RangeRequest_ASCEND)
}

func hasRevisionFilters(r *pb.RangeRequest) bool {
	return r.GetMinModRevision() != 0 || r.GetMaxModRevision() != 0 ||
		r.GetMinCreateRevision() != 0 || r.GetMaxCreateRevision() != 0
}

func filterRefs(refs []kvRef, r *pb.RangeRequest) []kvRef {
	if !hasRevisionFilters(r) {
		return refs
	}
	maxMod, minMod := r.GetMaxModRevision(), r.GetMinModRevision()
	maxCreate, minCreate := r.GetMaxCreateRevision(), r.GetMinCreateRevision()
	kept := refs[:0]
	for _, ref := range refs {
		switch {
		case maxMod != 0 && ref.rev.modMain > maxMod:
		case minMod != 0 && ref.rev.modMain < minMod:
		case maxCreate != 0 && ref.rev.createMain > maxCreate:
		case minCreate != 0 && ref.rev.createMain < minCreate:
		default:
			kept = append(kept, ref)
		}
	}
	return kept
}

// sortRefs orders refs as etcd's sortRangeResults does: the same comparison
// over the same key-ordered input with the same (unstable but
// deterministic) slices.SortFunc, so ties come out as etcd's do.
func sortRefs(refs []kvRef, r *pb.RangeRequest) {
	order, target := r.GetSortOrder(), r.GetSortTarget()
	if target != pb.RangeRequest_KEY && order == pb.RangeRequest_NONE {
		order = pb.RangeRequest_ASCEND
	}
	if isDefaultOrdering(target, order) {
		return
	}
	if target == pb.RangeRequest_KEY && order == pb.RangeRequest_DESCEND {
		slices.Reverse(refs)
		return
	}
	var compare func(a, b kvRef) int
	switch target {
	case pb.RangeRequest_KEY:
		compare = func(a, b kvRef) int { return bytes.Compare(a.key, b.key) }
	case pb.RangeRequest_VERSION:
		compare = func(a, b kvRef) int { return cmp.Compare(a.rev.version, b.rev.version) }
	case pb.RangeRequest_CREATE:
		compare = func(a, b kvRef) int { return cmp.Compare(a.rev.createMain, b.rev.createMain) }
	case pb.RangeRequest_MOD:
		compare = func(a, b kvRef) int { return cmp.Compare(a.rev.modMain, b.rev.modMain) }
	case pb.RangeRequest_VALUE:
		compare = func(a, b kvRef) int { return bytes.Compare(a.rev.value(), b.rev.value()) }
	default:
		// checkRange rejects unknown targets before a read starts.
		assert(false, "unknown sort target %d", target)
	}
	if order == pb.RangeRequest_DESCEND {
		asc := compare
		compare = func(a, b kvRef) int { return asc(b, a) }
	}
	slices.SortFunc(refs, compare)
}

// compare evaluates one txn comparison against the current state, as etcd's
// applyCompare: every key in the range must satisfy it; on no key at all,
// VALUE fails and the other targets compare against zero.
func (kv *kvState) compare(c *pb.Compare, probe *keyEntry) bool {
	sp := makeSpan(c.GetKey(), c.GetRangeEnd())
	any, all := false, true
	kv.ascend(sp, probe, func(e *keyEntry) bool {
		rev, ok := e.live()
		if !ok {
			return true
		}
		any = true
		if !compareRev(c, rev) {
			all = false
			return false
		}
		return true
	})
	if !any {
		if c.GetTarget() == pb.Compare_VALUE {
			return false
		}
		return compareRev(c, &keyRev{})
	}
	return all
}

func compareRev(c *pb.Compare, r *keyRev) bool {
	var result int
	switch c.GetTarget() {
	case pb.Compare_VALUE:
		v := []byte{}
		if tv, ok := c.GetTargetUnion().(*pb.Compare_Value); ok {
			v = tv.Value
		}
		result = bytes.Compare(r.value(), v)
	case pb.Compare_CREATE:
		result = cmp.Compare(r.createMain, c.GetCreateRevision())
	case pb.Compare_MOD:
		result = cmp.Compare(r.modMain, c.GetModRevision())
	case pb.Compare_VERSION:
		result = cmp.Compare(r.version, c.GetVersion())
	case pb.Compare_LEASE:
		result = cmp.Compare(r.lease, c.GetLease())
	}
	switch c.GetResult() {
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

// txnPath evaluates the compares of a txn and of every nested txn on the
// chosen branches, all against the state before the txn writes anything, as
// etcd's compareToPath. path[0] is this txn's outcome; nested outcomes
// follow in depth-first order.
func (kv *kvState) txnPath(t *pb.TxnRequest, probe *keyEntry, path []bool) []bool {
	ok := true
	for _, c := range t.GetCompare() {
		if !kv.compare(c, probe) {
			ok = false
			break
		}
	}
	path = append(path, ok)
	for _, op := range branch(t, ok) {
		if nested := op.GetRequestTxn(); nested != nil {
			path = kv.txnPath(nested, probe, path)
		}
	}
	return path
}

func branch(t *pb.TxnRequest, succeeded bool) []*pb.RequestOp {
	if succeeded {
		return t.GetSuccess()
	}
	return t.GetFailure()
}

// ErrTxnWrites is returned by ReadTxn when the branch the compares choose
// would write: such a txn must go through raft.
var ErrTxnWrites = errors.New("kvsm: txn writes in the chosen branch; it must be proposed")

// pathWrites reports whether the chosen branches (per path) write.
func pathWrites(t *pb.TxnRequest, path []bool) (writes bool, rest []bool) {
	ops := branch(t, path[0])
	path = path[1:]
	for _, op := range ops {
		switch op.GetRequest().(type) {
		case *pb.RequestOp_RequestPut, *pb.RequestOp_RequestDeleteRange:
			writes = true
		case *pb.RequestOp_RequestTxn:
			var w bool
			w, path = pathWrites(op.GetRequestTxn(), path)
			writes = writes || w
		}
	}
	return writes, path
}

// IsTxnReadOnly reports whether no branch of t, at any depth, writes. This is
// etcd's rule for serving a txn without raft when the caller cannot
// evaluate compares first.
func IsTxnReadOnly(t *pb.TxnRequest) bool {
	return !txnAnyOp(t, func(op *pb.RequestOp) bool {
		return op.GetRequestPut() != nil || op.GetRequestDeleteRange() != nil
	})
}

// readTxn runs a txn whose chosen branch only reads.
func (kv *kvState) readTxn(cfg Config, t *pb.TxnRequest, probe *keyEntry) (*pb.TxnResponse, error) {
	if kv.corrupt {
		return nil, rpctypes.ErrGRPCCorrupt
	}
	if t == nil {
		return nil, rpctypes.ErrGRPCKeyNotFound
	}
	if err := checkTxnRequest(t, cfg.maxTxnOps()); err != nil {
		return nil, err
	}
	if err := checkTxnDuplicates(t); err != nil {
		return nil, err
	}
	path := kv.txnPath(t, probe, nil)
	if w, _ := pathWrites(t, path); w {
		return nil, ErrTxnWrites
	}
	if _, err := kv.checkTxnPath(t, path); err != nil {
		return nil, err
	}
	resp, _ := kv.readTxnResponse(t, path, probe)
	resp.Header.Revision = kv.rev
	return resp, nil
}

// checkTxnPath makes etcd's apply-time checks of the chosen branches that do
// not need a lease table: range revisions. Puts are checked by the Store.
func (kv *kvState) checkTxnPath(t *pb.TxnRequest, path []bool) ([]bool, error) {
	return kv.checkTxnPathWith(t, path, nil)
}

// checkTxnPathWith is checkTxnPath with checkPut (when not nil) applied to
// every put on the path.
func (kv *kvState) checkTxnPathWith(t *pb.TxnRequest, path []bool, checkPut func(*pb.PutRequest) error) ([]bool, error) {
	ops := branch(t, path[0])
	path = path[1:]
	for _, op := range ops {
		switch {
		case op.GetRequestRange() != nil:
			if err := kv.checkRangeRevision(op.GetRequestRange()); err != nil {
				return nil, err
			}
		case op.GetRequestPut() != nil && checkPut != nil:
			if err := checkPut(op.GetRequestPut()); err != nil {
				return nil, err
			}
		case op.GetRequestTxn() != nil:
			var err error
			if path, err = kv.checkTxnPathWith(op.GetRequestTxn(), path, checkPut); err != nil {
				return nil, err
			}
		}
	}
	return path, nil
}

// checkRangeRevision is etcd's checkRange, except that a negative revision
// means "latest" here as it does for a plain Range (etcd compares it with
// its compact revision, which starts at -1, and so rejects it only once the
// store has been compacted).
func (kv *kvState) checkRangeRevision(r *pb.RangeRequest) error {
	_, err := kv.readRev(r.GetRevision(), kv.rev)
	return err
}

// readRev is the revision a read of revision rev sees, with curRev as the
// current one (rev <= 0 means current), or why it cannot be read.
func (kv *kvState) readRev(rev, curRev int64) (int64, error) {
	if rev > curRev {
		return 0, rpctypes.ErrGRPCFutureRev
	}
	if rev <= 0 {
		rev = curRev
	}
	if rev < kv.compactRev {
		return 0, rpctypes.ErrGRPCCompacted
	}
	return rev, nil
}

// readTxnResponse builds the response of a txn whose chosen path only reads.
func (kv *kvState) readTxnResponse(t *pb.TxnRequest, path []bool, probe *keyEntry) (*pb.TxnResponse, []bool) {
	ok := path[0]
	path = path[1:]
	ops := branch(t, ok)
	resp := &pb.TxnResponse{Header: &pb.ResponseHeader{}, Succeeded: ok, Responses: make([]*pb.ResponseOp, len(ops))}
	for i, op := range ops {
		switch {
		case op.GetRequestRange() != nil:
			rr, err := kv.rangeAt(op.GetRequestRange(), kv.rev, probe)
			assert(err == nil, "txn range failed after its checks passed: %v", err)
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: rr}}
		case op.GetRequestTxn() != nil:
			var nested *pb.TxnResponse
			nested, path = kv.readTxnResponse(op.GetRequestTxn(), path, probe)
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: nested}}
		default:
			resp.Responses[i] = &pb.ResponseOp{}
		}
	}
	return resp, path
}

func (kv *kvState) rangeChecked(r *pb.RangeRequest, probe *keyEntry) (*pb.RangeResponse, error) {
	if kv.corrupt {
		return nil, rpctypes.ErrGRPCCorrupt
	}
	if r == nil {
		return nil, rpctypes.ErrGRPCEmptyKey
	}
	if err := checkRangeRequest(r); err != nil {
		return nil, err
	}
	return kv.rangeAt(r, kv.rev, probe)
}

// Range answers a read at the store's current state. It never changes state.
// The returned messages share bytes with the store: treat them as read-only.
func (s *Store) Range(r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return s.kv.rangeChecked(r, &s.probe)
}

// ReadTxn runs a txn without proposing it. It fails with ErrTxnWrites when
// the branch its compares choose would write.
func (s *Store) ReadTxn(r *pb.TxnRequest) (*pb.TxnResponse, error) {
	return s.kv.readTxn(s.cfg, r, &s.probe)
}

// View is a frozen, read-only copy of the store's key-value state, taken in
// O(1). It is safe to read from another goroutine while the Store goes on
// applying: the Store never changes memory a View can reach (the key tree is
// copy-on-write and key entries are immutable). Several goroutines may read
// one View at once.
type View struct {
	cfg  Config
	kv   kvState
	auth *authState // immutable; shared with the store until its next auth change
}

// View returns a frozen copy of the current state.
func (s *Store) View() *View {
	frozen := s.kv
	frozen.keys = s.kv.keys.Copy()
	return &View{cfg: s.cfg, kv: frozen, auth: s.auth}
}

// AuthCurrent reports whether v's auth state is s's current one (a view
// taken before an auth change is not, though its revision may be).
func (v *View) AuthCurrent(s *Store) bool { return v.auth == s.auth }

// AuthEnabled, AuthRevision and CheckRange, CheckTxn, CheckAdmin are the
// Store's, on the auth state frozen with the view.
func (v *View) AuthEnabled() bool    { return v.auth.enabled }
func (v *View) AuthRevision() uint64 { return v.auth.revision }
func (v *View) CheckRange(ai AuthInfo, key, rangeEnd []byte) error {
	return v.auth.checkRange(ai, key, rangeEnd)
}
func (v *View) CheckAdmin(ai AuthInfo) error { return v.auth.checkAdmin(ai) }

// UserPassword is Store.UserPassword on the frozen state.
func (v *View) UserPassword(name string) (hash []byte, ok bool, noPassword bool) {
	return userPassword(v.auth, name)
}

func (v *View) Rev() int64        { return v.kv.rev }
func (v *View) CompactRev() int64 { return v.kv.compactRev }

// Range is Store.Range on the frozen state.
func (v *View) Range(r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return v.kv.rangeChecked(r, &keyEntry{})
}

// ReadTxn is Store.ReadTxn on the frozen state.
func (v *View) ReadTxn(r *pb.TxnRequest) (*pb.TxnResponse, error) {
	return v.kv.readTxn(v.cfg, r, &keyEntry{})
}

// HashKV is Store.HashKV on the frozen state.
func (v *View) HashKV(rev int64) (hash uint32, hashRev int64, compactRev int64, err error) {
	return v.kv.hashKV(rev)
}

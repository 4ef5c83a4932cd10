package linearizability

import (
	"fmt"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// response is one response in the checkers' form, either observed (converted
// from what the client received) or expected (computed by apply).
type response struct {
	kind requestKind
	err  errorKind
	// altErr is a second error an expected response allows: a put that
	// breaks two apply-time rules may be refused for either (etcd checks its
	// lease first, kvsm its ignore_* key first).
	altErr   errorKind
	revision int64 // header revision; compared for top-level responses only
	rng      *rangeResult
	prevKV   *keyValue // put
	deleted  int64     // delete
	prevKVs  []keyValue
	txn      *txnResult
	leaseID  int64
	leaseTTL int64
}

type txnResult struct {
	succeeded bool
	responses []*response
}

// rangeResult is a range's answer. An observed one has kvs as received. An
// expected one has the candidates in the requested order before the limit
// cut, so that ties under a non-key sort order can be matched in any order,
// as etcd's unstable sort may return them.
type rangeResult struct {
	kvs   []keyValue // observed: as received; expected: the first n candidates
	count int64
	more  bool
	// Expected only:
	candidates []keyValue // after filters, sorted as requested, before the limit
	n          int
	keysOnly   bool
	sortTarget rangeSortTarget
	// unchecked marks an expected result the model cannot compute: a read at
	// a past revision while checking linearizability, which is answered from
	// the replay instead.
	unchecked bool
}

type rangeSortTarget uint8

const (
	sortByKey rangeSortTarget = iota // a key order: the result is exact
	sortByVersion
	sortByCreate
	sortByMod
	sortByValue
)

// convertResponse turns what the client received into the checkers' form.
func convertResponse(q Response, req *request) (*response, error) {
	r := &response{kind: req.kind, err: classifyError(q.Err, req)}
	if r.err != errNone {
		return r, nil
	}
	var missing bool
	switch req.kind {
	case kindRange:
		missing = q.Range == nil
		if !missing {
			r.revision = q.Range.GetHeader().GetRevision()
			r.rng = convertRangeResponse(q.Range)
		}
	case kindPut:
		missing = q.Put == nil
		if !missing {
			r.revision = q.Put.GetHeader().GetRevision()
			r.prevKV = convertKVPtr(q.Put.GetPrevKv())
		}
	case kindDeleteRange:
		missing = q.DeleteRange == nil
		if !missing {
			r.revision = q.DeleteRange.GetHeader().GetRevision()
			r.deleted = q.DeleteRange.GetDeleted()
			r.prevKVs = convertKVs(q.DeleteRange.GetPrevKvs())
		}
	case kindTxn:
		missing = q.Txn == nil
		if !missing {
			r.revision = q.Txn.GetHeader().GetRevision()
			r.txn = convertTxnResponse(q.Txn)
		}
	case kindCompact:
		missing = q.Compact == nil
		if !missing {
			r.revision = q.Compact.GetHeader().GetRevision()
		}
	case kindLeaseGrant:
		missing = q.LeaseGrant == nil
		if !missing {
			r.revision = q.LeaseGrant.GetHeader().GetRevision()
			r.leaseID = q.LeaseGrant.GetID()
			r.leaseTTL = q.LeaseGrant.GetTTL()
			if q.LeaseGrant.GetError() != "" {
				return nil, fmt.Errorf("lease grant response carries error %q in its body; report it in Err", q.LeaseGrant.GetError())
			}
		}
	case kindLeaseRevoke:
		missing = q.LeaseRevoke == nil
		if !missing {
			r.revision = q.LeaseRevoke.GetHeader().GetRevision()
		}
	}
	if missing {
		return nil, fmt.Errorf("%s succeeded but its response is missing", req.kind)
	}
	return r, nil
}

func convertRangeResponse(q *pb.RangeResponse) *rangeResult {
	return &rangeResult{kvs: convertKVs(q.GetKvs()), count: q.GetCount(), more: q.GetMore()}
}

func convertTxnResponse(q *pb.TxnResponse) *txnResult {
	t := &txnResult{succeeded: q.GetSucceeded()}
	for _, op := range q.GetResponses() {
		var r *response
		switch {
		case op.GetResponseRange() != nil:
			x := op.GetResponseRange()
			r = &response{kind: kindRange, revision: x.GetHeader().GetRevision(), rng: convertRangeResponse(x)}
		case op.GetResponsePut() != nil:
			x := op.GetResponsePut()
			r = &response{kind: kindPut, revision: x.GetHeader().GetRevision(), prevKV: convertKVPtr(x.GetPrevKv())}
		case op.GetResponseDeleteRange() != nil:
			x := op.GetResponseDeleteRange()
			r = &response{kind: kindDeleteRange, revision: x.GetHeader().GetRevision(), deleted: x.GetDeleted(), prevKVs: convertKVs(x.GetPrevKvs())}
		case op.GetResponseTxn() != nil:
			x := op.GetResponseTxn()
			r = &response{kind: kindTxn, revision: x.GetHeader().GetRevision(), txn: convertTxnResponse(x)}
		default:
			r = &response{kind: kindNone}
		}
		t.responses = append(t.responses, r)
	}
	return t
}

func convertKV(kv *mvccpb.KeyValue) keyValue {
	return keyValue{
		key:            string(kv.GetKey()),
		value:          string(kv.GetValue()),
		createRevision: kv.GetCreateRevision(),
		modRevision:    kv.GetModRevision(),
		version:        kv.GetVersion(),
		lease:          kv.GetLease(),
	}
}

func convertKVPtr(kv *mvccpb.KeyValue) *keyValue {
	if kv == nil {
		return nil
	}
	c := convertKV(kv)
	return &c
}

func convertKVs(kvs []*mvccpb.KeyValue) []keyValue {
	if len(kvs) == 0 {
		return nil
	}
	out := make([]keyValue, len(kvs))
	for i, kv := range kvs {
		out[i] = convertKV(kv)
	}
	return out
}

// matchConfig holds what matching needs beyond the two responses.
type matchConfig struct {
	minLeaseTTL int64 // seconds; 0 means unknown
}

// matches reports whether the observed response is one the model allows,
// given the expected one. Headers of responses nested in a txn are not
// compared: etcd fills them inconsistently (a nested txn's is empty).
func matches(req *request, exp, obs *response, cfg *matchConfig, top bool) bool {
	if exp.err != obs.err && (exp.altErr == errNone || exp.altErr != obs.err) {
		return false
	}
	if obs.err != errNone {
		return true
	}
	if top {
		switch req.kind {
		case kindLeaseGrant, kindLeaseRevoke:
			// etcd fills the store revision; a lease service may leave it 0.
			if obs.revision != 0 && obs.revision != exp.revision {
				return false
			}
		default:
			if obs.revision != exp.revision {
				return false
			}
		}
	}
	switch req.kind {
	case kindRange:
		return obs.rng != nil && rangeMatches(exp.rng, obs.rng)
	case kindPut:
		return kvPtrEqual(exp.prevKV, obs.prevKV)
	case kindDeleteRange:
		return exp.deleted == obs.deleted && kvsEqual(exp.prevKVs, obs.prevKVs)
	case kindTxn:
		if obs.txn == nil || exp.txn.succeeded != obs.txn.succeeded || len(exp.txn.responses) != len(obs.txn.responses) {
			return false
		}
		branch := req.txn.success
		if !exp.txn.succeeded {
			branch = req.txn.failure
		}
		for i, sub := range branch {
			e, o := exp.txn.responses[i], obs.txn.responses[i]
			if e.kind != o.kind || !matches(sub, e, o, cfg, false) {
				return false
			}
		}
		return true
	case kindLeaseGrant:
		if obs.leaseID != exp.leaseID {
			return false
		}
		if cfg.minLeaseTTL == 0 {
			return obs.leaseTTL >= req.leaseTTL
		}
		return obs.leaseTTL == exp.leaseTTL
	}
	return true
}

func rangeMatches(exp, obs *rangeResult) bool {
	if exp.unchecked {
		return true
	}
	if exp.count != obs.count || exp.more != obs.more || len(obs.kvs) != exp.n {
		return false
	}
	if exp.sortTarget == sortByKey {
		for i := range obs.kvs {
			if !kvMatches(exp.candidates[i], obs.kvs[i], exp.keysOnly) {
				return false
			}
		}
		return true
	}
	// Under a non-key order, ties may come in any order and the limit may cut
	// any of them: the sort keys must run as expected, and every kv must be a
	// distinct candidate.
	for i := range obs.kvs {
		if compareSortKey(exp.sortTarget, exp.candidates[i], obs.kvs[i]) != 0 {
			return false
		}
		found := false
		for _, c := range exp.candidates {
			if c.key == obs.kvs[i].key {
				found = kvMatches(c, obs.kvs[i], exp.keysOnly)
				break
			}
		}
		if !found {
			return false
		}
		for j := 0; j < i; j++ {
			if obs.kvs[j].key == obs.kvs[i].key {
				return false
			}
		}
	}
	return true
}

func kvMatches(exp, obs keyValue, keysOnly bool) bool {
	if keysOnly {
		exp.value = ""
	}
	return exp == obs
}

func kvPtrEqual(a, b *keyValue) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func kvsEqual(a, b []keyValue) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// String renders a response for failures and the visualization.
func (r *response) String() string {
	if r == nil {
		return "unknown"
	}
	if r.err != errNone {
		return "error " + r.err.String()
	}
	var b strings.Builder
	r.describe(&b)
	if r.revision != 0 {
		fmt.Fprintf(&b, " @rev %d", r.revision)
	}
	return b.String()
}

func (r *response) describe(b *strings.Builder) {
	switch r.kind {
	case kindRange:
		rr := r.rng
		if rr.unchecked {
			b.WriteString("[past revision: checked against the replay]")
			return
		}
		kvs := rr.kvs
		if rr.candidates != nil || rr.n > 0 {
			kvs = rr.candidates[:rr.n]
		}
		b.WriteString("[")
		for i, kv := range kvs {
			if i > 0 {
				b.WriteString(", ")
			}
			if rr.keysOnly {
				kv.value = ""
			}
			b.WriteString(kv.String())
		}
		fmt.Fprintf(b, "] count %d", rr.count)
		if rr.more {
			b.WriteString(" more")
		}
	case kindPut:
		b.WriteString("ok")
		if r.prevKV != nil {
			b.WriteString(" prev " + r.prevKV.String())
		}
	case kindDeleteRange:
		fmt.Fprintf(b, "deleted %d", r.deleted)
		if len(r.prevKVs) > 0 {
			b.WriteString(" prev [")
			for i, kv := range r.prevKVs {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(kv.String())
			}
			b.WriteString("]")
		}
	case kindTxn:
		if r.txn.succeeded {
			b.WriteString("then [")
		} else {
			b.WriteString("else [")
		}
		for i, sub := range r.txn.responses {
			if i > 0 {
				b.WriteString(", ")
			}
			if sub.err != errNone {
				b.WriteString("error " + sub.err.String())
				continue
			}
			sub.describe(b)
		}
		b.WriteString("]")
	case kindLeaseGrant:
		fmt.Fprintf(b, "lease %d ttl %ds", r.leaseID, r.leaseTTL)
	default:
		b.WriteString("ok")
	}
}

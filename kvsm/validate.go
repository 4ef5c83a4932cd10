package kvsm

import (
	"bytes"

	"github.com/tidwall/btree"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Validate makes the checks etcd makes at its API layer before it proposes a
// request (v3rpc/key.go and friends): empty keys, unknown sort options,
// ignore_value/ignore_lease with a value/lease, too many txn operations
// (nested txns included), a key written twice in one txn (or put inside a
// range the txn deletes), a lease TTL above MaxLeaseTTLSeconds and a
// negative compaction revision. It returns an rpctypes.ErrGRPC* error or
// nil. It is pure and needs no store: checks that depend on state (lease
// exists, key exists for ignore_*, revision compacted) happen in Apply.
//
// A request kind Apply does not handle fails with ErrGRPCNotCapable, so that
// Validate passing means Apply can only fail for reasons of state.
func Validate(cfg Config, r *pb.InternalRaftRequest) error {
	switch {
	case r == nil:
		return rpctypes.ErrGRPCNotCapable
	case r.GetRange() != nil:
		return checkRangeRequest(r.GetRange())
	case r.GetPut() != nil:
		return checkPutRequest(r.GetPut())
	case r.GetDeleteRange() != nil:
		return checkDeleteRequest(r.GetDeleteRange())
	case r.GetTxn() != nil:
		if err := checkTxnRequest(r.GetTxn(), cfg.maxTxnOps()); err != nil {
			return err
		}
		return checkTxnDuplicates(r.GetTxn())
	case r.GetCompaction() != nil:
		if r.GetCompaction().GetRevision() < 0 {
			// Below every compact revision; etcd would answer the same
			// at apply once anything was compacted.
			return rpctypes.ErrGRPCCompacted
		}
		return nil
	case r.GetLeaseGrant() != nil:
		if r.GetLeaseGrant().GetTTL() > MaxLeaseTTLSeconds {
			return rpctypes.ErrGRPCLeaseTTLTooLarge
		}
		return nil
	case r.GetLeaseRevoke() != nil, r.GetAlarm() != nil:
		return nil
	}
	return rpctypes.ErrGRPCNotCapable
}

func checkRangeRequest(r *pb.RangeRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.GetSortOrder())]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(r.GetSortTarget())]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

func checkPutRequest(r *pb.PutRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if r.GetIgnoreValue() && len(r.GetValue()) != 0 {
		return rpctypes.ErrGRPCValueProvided
	}
	if r.GetIgnoreLease() && r.GetLease() != 0 {
		return rpctypes.ErrGRPCLeaseProvided
	}
	return nil
}

func checkDeleteRequest(r *pb.DeleteRangeRequest) error {
	if len(r.GetKey()) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	return nil
}

// checkTxnRequest is etcd's checkTxnRequest: the largest of the compare,
// success and failure counts may not exceed maxTxnOps, and each nested txn
// gets what its parent leaves over (maxTxnOps minus the parent's count), so
// depth eats into the limit. Apply passes math.MaxInt: no limit, since the
// limit is a member's configuration and applying must not depend on it.
func checkTxnRequest(r *pb.TxnRequest, maxTxnOps int) error {
	opc := max(len(r.GetCompare()), len(r.GetSuccess()), len(r.GetFailure()))
	if opc > maxTxnOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.GetCompare() {
		if len(c.GetKey()) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.GetSuccess(), r.GetFailure()} {
		for _, op := range ops {
			if err := checkRequestOp(op, maxTxnOps-opc); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkRequestOp(op *pb.RequestOp, maxTxnOps int) error {
	switch {
	case op.GetRequestRange() != nil:
		return checkRangeRequest(op.GetRequestRange())
	case op.GetRequestPut() != nil:
		return checkPutRequest(op.GetRequestPut())
	case op.GetRequestDeleteRange() != nil:
		return checkDeleteRequest(op.GetRequestDeleteRange())
	case op.GetRequestTxn() != nil:
		return checkTxnRequest(op.GetRequestTxn(), maxTxnOps)
	}
	// An empty op (or an op whose request is nil): etcd answers KeyNotFound.
	return rpctypes.ErrGRPCKeyNotFound
}

// checkTxnDuplicates is etcd's checkIntervals, stated as the rule it
// enforces: on no path through a txn (one branch at the top, then one
// branch of every nested txn on it) may a key be written twice, where a put
// writes its key and a delete writes every key in its range. Deletes may
// overlap each other. The two branches of one nested txn exclude each
// other, so the same put in both is fine.
//
// Two deliberate differences from etcd's code, both cases it lets through
// and then applies as two changes of one key in one revision: a delete with
// range_end "\x00" covers what it deletes (etcd builds the interval from
// the raw range_end and catches no put in it), and a put in one nested txn
// conflicts with a delete in a later sibling (etcd checks only the other
// order).
func checkTxnDuplicates(r *pb.TxnRequest) error {
	if _, err := branchWrites(r.GetSuccess()); err != nil {
		return err
	}
	_, err := branchWrites(r.GetFailure())
	return err
}

// writeSet is what one branch may write on some path: the keys it puts and
// the spans it deletes.
type writeSet struct {
	puts *btree.BTreeG[[]byte]
	dels spanSet
}

func newWriteSet() *writeSet {
	return &writeSet{puts: btree.NewBTreeGOptions(func(a, b []byte) bool { return bytes.Compare(a, b) < 0 }, btree.Options{NoLocks: true})}
}

// putConflicts reports whether a put of k would write a key already written.
func (ws *writeSet) putConflicts(k []byte) bool {
	if _, ok := ws.puts.Get(k); ok {
		return true
	}
	return ws.dels.contains(k)
}

// delConflicts reports whether a delete of sp would cover a key already put.
func (ws *writeSet) delConflicts(sp keySpan) bool {
	if sp.kind == spanSingle {
		_, ok := ws.puts.Get(sp.key)
		return ok
	}
	hit := false
	ws.puts.Ascend(sp.key, func(k []byte) bool {
		hit = sp.contains(k)
		return false
	})
	return hit
}

// absorb checks o's writes against ws's and adds them.
func (ws *writeSet) absorb(o *writeSet) error {
	var err error
	o.puts.Scan(func(k []byte) bool {
		if ws.putConflicts(k) {
			err = rpctypes.ErrGRPCDuplicateKey
		}
		return err == nil
	})
	if err != nil {
		return err
	}
	for _, sp := range o.dels.all() {
		if ws.delConflicts(sp) {
			return rpctypes.ErrGRPCDuplicateKey
		}
	}
	return nil
}

func (ws *writeSet) merge(o *writeSet) {
	o.puts.Scan(func(k []byte) bool {
		ws.puts.Set(k)
		return true
	})
	ws.dels.merge(o.dels)
}

// spanSet is a set of delete spans: single keys in a map (the common case,
// checked in O(1)) and the rest in a list.
type spanSet struct {
	singles map[string]struct{}
	others  []keySpan
}

func (d *spanSet) add(sp keySpan) {
	if sp.kind == spanSingle {
		if d.singles == nil {
			d.singles = map[string]struct{}{}
		}
		d.singles[string(sp.key)] = struct{}{}
		return
	}
	d.others = append(d.others, sp)
}

// all lists the spans; the order is the map's, so callers may only use it
// where order cannot matter.
func (d *spanSet) all() []keySpan {
	out := append([]keySpan(nil), d.others...)
	for k := range d.singles { //noded:map-order-ok callers only test membership and fail the same way on any hit
		out = append(out, keySpan{key: []byte(k), kind: spanSingle})
	}
	return out
}

func (d *spanSet) merge(o spanSet) {
	for k := range o.singles { //noded:map-order-ok set union; the result does not depend on order
		d.add(keySpan{key: []byte(k), kind: spanSingle})
	}
	d.others = append(d.others, o.others...)
}

func (d *spanSet) contains(k []byte) bool {
	if _, ok := d.singles[string(k)]; ok {
		return true
	}
	for _, sp := range d.others {
		if sp.contains(k) {
			return true
		}
	}
	return false
}

// branchWrites returns what a branch may write, or DuplicateKey. Every pair
// of writes that can meet on one path is checked once: the branch's own
// puts against each other, its deletes against its puts, and each nested
// txn's branches against everything before them (but not against each
// other).
func branchWrites(ops []*pb.RequestOp) (*writeSet, error) {
	acc := newWriteSet()
	for _, op := range ops {
		if p := op.GetRequestPut(); p != nil {
			if acc.putConflicts(p.GetKey()) {
				return nil, rpctypes.ErrGRPCDuplicateKey
			}
			acc.puts.Set(p.GetKey())
		}
	}
	for _, op := range ops {
		if d := op.GetRequestDeleteRange(); d != nil {
			sp := makeSpan(d.GetKey(), d.GetRangeEnd())
			if acc.delConflicts(sp) {
				return nil, rpctypes.ErrGRPCDuplicateKey
			}
			acc.dels.add(sp)
		}
	}
	for _, op := range ops {
		t := op.GetRequestTxn()
		if t == nil {
			continue
		}
		then, err := branchWrites(t.GetSuccess())
		if err != nil {
			return nil, err
		}
		els, err := branchWrites(t.GetFailure())
		if err != nil {
			return nil, err
		}
		if err := acc.absorb(then); err != nil {
			return nil, err
		}
		if err := acc.absorb(els); err != nil {
			return nil, err
		}
		acc.merge(then)
		acc.merge(els)
	}
	return acc, nil
}

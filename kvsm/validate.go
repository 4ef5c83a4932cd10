package kvsm

import (
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
// success and failure counts may not exceed maxTxnOps, and nested txns are
// checked against what the outer level leaves over... as etcd does it, which
// passes maxTxnOps-opc to each op but the full maxTxnOps to a nested txn.
// maxTxnOps <= 0 skips the count (Apply's structural check).
func checkTxnRequest(r *pb.TxnRequest, maxTxnOps int) error {
	opc := len(r.GetCompare())
	opc = max(opc, len(r.GetSuccess()), len(r.GetFailure()))
	if maxTxnOps > 0 && opc > maxTxnOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.GetCompare() {
		if len(c.GetKey()) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.GetSuccess(), r.GetFailure()} {
		for _, op := range ops {
			if err := checkRequestOp(op, maxTxnOps); err != nil {
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

// checkTxnDuplicates is etcd's checkIntervals over both branches: within one
// branch (nested txns included) no key may be put twice, and no key may be
// put inside a range the branch deletes. The two branches of one nested txn
// exclude each other, so the same put in both is fine.
//
// One deliberate difference: etcd builds its delete intervals from the raw
// range_end, so a delete with range_end "\x00" (every key from key on)
// catches no put. Here it covers what it deletes.
func checkTxnDuplicates(r *pb.TxnRequest) error {
	if _, _, err := branchWrites(r.GetSuccess()); err != nil {
		return err
	}
	_, _, err := branchWrites(r.GetFailure())
	return err
}

// spanSet is the delete spans of one branch: single keys in a map (the
// common case, checked in O(1)) and the rest in a list.
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

// branchWrites returns the keys a branch may put and the spans it may
// delete, or DuplicateKey. Whether it fails does not depend on the order in
// which the sets are walked.
func branchWrites(ops []*pb.RequestOp) (puts map[string]struct{}, dels spanSet, err error) {
	puts = map[string]struct{}{}
	for _, op := range ops {
		if d := op.GetRequestDeleteRange(); d != nil {
			dels.add(makeSpan(d.GetKey(), d.GetRangeEnd()))
		}
	}
	for _, op := range ops {
		t := op.GetRequestTxn()
		if t == nil {
			continue
		}
		thenPuts, thenDels, err := branchWrites(t.GetSuccess())
		if err != nil {
			return nil, spanSet{}, err
		}
		elsePuts, elseDels, err := branchWrites(t.GetFailure())
		if err != nil {
			return nil, spanSet{}, err
		}
		for k := range thenPuts { //noded:map-order-ok any duplicate fails the whole txn the same way
			if _, seen := puts[k]; seen || dels.contains([]byte(k)) {
				return nil, spanSet{}, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = struct{}{}
		}
		for k := range elsePuts { //noded:map-order-ok any duplicate fails the whole txn the same way
			_, inThen := thenPuts[k]
			if _, seen := puts[k]; (seen && !inThen) || dels.contains([]byte(k)) {
				return nil, spanSet{}, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = struct{}{}
		}
		dels.merge(thenDels)
		dels.merge(elseDels)
	}
	for _, op := range ops {
		p := op.GetRequestPut()
		if p == nil {
			continue
		}
		if _, seen := puts[string(p.GetKey())]; seen || dels.contains(p.GetKey()) {
			return nil, spanSet{}, rpctypes.ErrGRPCDuplicateKey
		}
		puts[string(p.GetKey())] = struct{}{}
	}
	return puts, dels, nil
}

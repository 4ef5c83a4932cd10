package v2store

import (
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
)

// writeAttemptsMax bounds how often a write reads again because a node it
// depends on changed between its read and its Txn.
const writeAttemptsMax = 16

// depthMax bounds a path's depth: a write reads every ancestor in one Txn,
// which must stay under the member's --max-txn-ops (128 by default).
const depthMax = 100

// Result is a finished request.
type Result struct {
	Event *Event // the answer, or nil with Err
	Err   *Error
	// Index is the revision the answer reflects (X-Etcd-Index): the read's
	// or the write's.
	Index uint64
	// Term is the raft term of the last v3 answer (X-Raft-Term).
	Term uint64
}

// Op runs one non-waiting request (see Watcher for waits) as a sequence
// of v3 requests: Start gives the first, Step takes each answer and gives
// the next or the Result. The caller sends each request to a member or
// cluster and hands back exactly what came back.
type Op struct {
	req      *Request
	attempts int
	lease    int64 // granted for this request's TTL; reused across attempts
	plan     *writePlan
	stage    stage
	result   *Result // the committed write's, while its old leases are revoked
	revoked  int     // how many of plan.revoke were sent
}

type stage int

const (
	stageRead stage = iota
	stageLease
	stageTxn
	stageRevoke
	stageDone
)

// NewOp prepares a request; it must not wait (Request.Wait).
func NewOp(req *Request) *Op { return &Op{req: req} }

// Request is the request the Op runs.
func (o *Op) Request() *Request { return o.req }

// Start is the first v3 request (a read), or a Result when the request is
// refused before anything is read.
func (o *Op) Start() (proto.Message, *Result) {
	if o.req.Wait {
		return nil, &Result{Err: NewError(EcodeRaftInternal, "a waiting request runs as a Watcher", 0)}
	}
	if len(ancestors(o.req.Path)) > depthMax {
		return nil, &Result{Err: requestError(EcodeInvalidField, fmt.Sprintf("key %q is deeper than %d levels", o.req.Path, depthMax))}
	}
	o.stage = stageRead
	return o.readTxn(), nil
}

// Step takes the answer to the last request (resp, or err) at wall time
// now and gives the next request or the Result.
func (o *Op) Step(resp proto.Message, err error, now time.Time) (proto.Message, *Result) {
	if err != nil && o.stage == stageRevoke {
		return o.nextRevoke()
	}
	if err != nil {
		if o.stage == stageTxn {
			switch {
			case errors.Is(err, rpctypes.ErrGRPCLeaseNotFound):
				// The lease expired before the write: grant another.
				o.lease = 0
				return o.retry(0)
			}
		}
		return o.finish(&Result{Err: FromV3Error(err)})
	}
	switch o.stage {
	case stageRead:
		txn, ok := resp.(*pb.TxnResponse)
		if !ok {
			return o.finish(&Result{Err: NewError(EcodeRaftInternal, fmt.Sprintf("unexpected answer %T to a read", resp), 0)})
		}
		st, derr := o.readState(txn)
		if derr != nil {
			return o.finish(&Result{Err: derr})
		}
		plan, res := decide(o.req, st, now)
		if res != nil {
			return o.finish(res)
		}
		o.plan = plan
		if plan.leaseTTL > 0 && o.lease == 0 {
			o.stage = stageLease
			return &pb.LeaseGrantRequest{TTL: plan.leaseTTL}, nil
		}
		return o.sendTxn()
	case stageLease:
		g, ok := resp.(*pb.LeaseGrantResponse)
		if !ok || g.GetID() == 0 {
			return o.finish(&Result{Err: NewError(EcodeRaftInternal, fmt.Sprintf("unexpected answer %T to a lease grant", resp), 0)})
		}
		o.lease = g.GetID()
		return o.sendTxn()
	case stageTxn:
		txn, ok := resp.(*pb.TxnResponse)
		if !ok {
			return o.finish(&Result{Err: NewError(EcodeRaftInternal, fmt.Sprintf("unexpected answer %T to a write", resp), 0)})
		}
		if !txn.GetSucceeded() {
			return o.retry(uint64(txn.GetHeader().GetRevision()))
		}
		o.result = o.plan.result(txn)
		return o.nextRevoke()
	case stageRevoke:
		// A lease that expired meanwhile is as good as revoked.
		return o.nextRevoke()
	}
	return nil, &Result{Err: NewError(EcodeRaftInternal, "step after the result", 0)}
}

// retry reads again after the nodes the write depends on changed.
func (o *Op) retry(index uint64) (proto.Message, *Result) {
	o.attempts++
	if o.attempts >= writeAttemptsMax {
		return o.finish(&Result{Err: NewError(EcodeRaftInternal,
			fmt.Sprintf("the nodes %s depends on changed under %d attempts in a row", o.req.Path, o.attempts), index)})
	}
	o.stage = stageRead
	o.plan = nil
	return o.readTxn(), nil
}

// nextRevoke revokes the next lease the write left without keys (the
// TTLs of the nodes it replaced or deleted), then answers: leases would
// otherwise linger until they expire.
func (o *Op) nextRevoke() (proto.Message, *Result) {
	if o.revoked < len(o.plan.revoke) {
		id := o.plan.revoke[o.revoked]
		o.revoked++
		o.stage = stageRevoke
		return &pb.LeaseRevokeRequest{ID: id}, nil
	}
	return o.finish(o.result)
}

func (o *Op) sendTxn() (proto.Message, *Result) {
	o.stage = stageTxn
	return o.plan.txn(o.lease), nil
}

func (o *Op) finish(r *Result) (proto.Message, *Result) {
	o.stage = stageDone
	return nil, r
}

// FromV3Error is the v2 error for a failed v3 request: etcd's v2 API
// answers errors of the consensus layer as Raft Internal Error (300), and
// the lack of a leader as During Leader Election (301).
func FromV3Error(err error) *Error {
	var v2 *Error
	if errors.As(err, &v2) {
		return v2
	}
	if errors.Is(err, rpctypes.ErrGRPCNoLeader) || errors.Is(err, rpctypes.ErrNoLeader) {
		return NewError(EcodeLeaderElect, rpctypes.ErrorDesc(err), 0)
	}
	return NewError(EcodeRaftInternal, rpctypes.ErrorDesc(err), 0)
}

// needsSubtree says which requests read the nodes below their path.
func (o *Op) needsSubtree() bool {
	r := o.req
	switch r.Method {
	case MethodGet, MethodDelete:
		return true
	case MethodPut:
		// An update of a directory moves the nodes that share its TTL.
		return r.PrevExist != nil && *r.PrevExist && r.PrevIndex == 0 && r.PrevValue == ""
	}
	return false
}

// readTxn reads the request's ancestors, its node and (for some) its
// subtree in one linearizable Txn.
func (o *Op) readTxn() *pb.TxnRequest {
	p := o.req.Path
	var ops []*pb.RequestOp
	rng := func(key, end []byte) {
		ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: key, RangeEnd: end}}})
	}
	for _, a := range ancestors(p) {
		rng(dataKey(a), nil)
	}
	if p != "/" {
		rng(dataKey(p), nil)
	}
	if o.needsSubtree() {
		rng(subtree(p))
	}
	return &pb.TxnRequest{Success: ops}
}

// readState is what a read found.
type readState struct {
	path      string
	ancestors []*entry // top first; nil where absent
	node      *entry   // nil when absent (or the root)
	children  []entry  // every node below, in key order (when read)
	rev       int64
	term      uint64
}

func (o *Op) readState(txn *pb.TxnResponse) (*readState, *Error) {
	p := o.req.Path
	st := &readState{path: p, rev: txn.GetHeader().GetRevision(), term: txn.GetHeader().GetRaftTerm()}
	resps := txn.GetResponses()
	anc := ancestors(p)
	want := len(anc)
	if p != "/" {
		want++
	}
	if o.needsSubtree() {
		want++
	}
	if len(resps) != want {
		return nil, NewError(EcodeRaftInternal, fmt.Sprintf("a read of %d ranges answered %d", want, len(resps)), uint64(st.rev))
	}
	one := func(i int) *entry {
		kvs := resps[i].GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			return nil
		}
		e, ok := entryOf(kvs[0])
		if !ok {
			return nil
		}
		return &e
	}
	for i := range anc {
		st.ancestors = append(st.ancestors, one(i))
	}
	i := len(anc)
	if p != "/" {
		st.node = one(i)
		i++
	}
	if o.needsSubtree() {
		for _, kv := range resps[i].GetResponseRange().GetKvs() {
			if e, ok := entryOf(kv); ok {
				st.children = append(st.children, e)
			}
		}
	}
	return st, nil
}

// walk is etcd's internalGet over what was read: the first ancestor that
// is missing (Key not found) or a file (Not a directory), then the node.
func (st *readState) walk() *Error {
	for i, a := range st.ancestors {
		switch {
		case a == nil:
			return NewError(EcodeKeyNotFound, ancestors(st.path)[i], uint64(st.rev))
		case !a.rec.dir:
			return NewError(EcodeNotDir, a.path, uint64(st.rev))
		}
	}
	if st.path != "/" && st.node == nil {
		return NewError(EcodeKeyNotFound, st.path, uint64(st.rev))
	}
	return nil
}

// fileAncestor is the first ancestor that is a file, which a create
// cannot walk through.
func (st *readState) fileAncestor() *Error {
	for _, a := range st.ancestors {
		if a != nil && !a.rec.dir {
			return NewError(EcodeNotDir, a.path, uint64(st.rev))
		}
	}
	return nil
}

// inheritedLease is the lease a node created here without a TTL of its
// own shares: its deepest ancestor's, so that it goes when a directory
// with a TTL above it expires.
func (st *readState) inheritedLease() int64 {
	for i := len(st.ancestors) - 1; i >= 0; i-- {
		if a := st.ancestors[i]; a != nil {
			return a.kv.GetLease()
		}
	}
	return 0
}

func (st *readState) errorAt(code int, cause string) *Result {
	return &Result{Err: NewError(code, cause, uint64(st.rev)), Index: uint64(st.rev), Term: st.term}
}

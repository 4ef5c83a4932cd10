package v2store

import (
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// writePlan is a decided write: the Txn that makes it, guarded by
// compares that fail if anything it was decided on has changed, and the
// event it answers with once committed.
type writePlan struct {
	action string
	silent bool // a refresh: watchers are not told
	path   string

	compares []*pb.Compare
	dirs     [][]byte // missing directories to create
	dirLease int64    // the lease they share
	nodeKey  []byte
	nodeRec  *record
	// nodeOwnLease: the node gets the lease granted for its TTL; otherwise
	// nodeLease.
	nodeOwnLease bool
	nodeLease    int64
	moved        []entry // nodes below that move to the node's lease
	deletes      []*pb.DeleteRangeRequest
	leaseTTL     int64 // > 0: grant a lease of this TTL first
	// revoke are the leases of the TTLs the write replaces or deletes,
	// which no key holds once it committed.
	revoke []int64

	node     *Node
	prevNode *Node
	newNode  bool // created at the commit's index
	term     uint64
}

// newPlan starts a write of p's action, guarded by the ancestors and the
// node being as read.
func newPlan(st *readState, action, p string) *writePlan {
	w := &writePlan{action: action, path: p, term: st.term}
	for i, a := range ancestors(st.path) {
		w.compares = append(w.compares, modEqual(dataKey(a), modOf(st.ancestors[i])))
	}
	if st.path != "/" {
		w.compares = append(w.compares, modEqual(dataKey(st.path), modOf(st.node)))
	}
	w.dirLease = st.inheritedLease()
	return w
}

// revokeOwn plans the revoke of e's own TTL lease (not one it inherited).
func (w *writePlan) revokeOwn(e *entry) {
	if e != nil && e.rec.expireUnixNs != 0 && e.kv.GetLease() != 0 {
		w.revoke = append(w.revoke, e.kv.GetLease())
	}
}

func modOf(e *entry) int64 {
	if e == nil {
		return 0
	}
	return e.kv.GetModRevision()
}

// createMissing plans a directory for each of paths whose entry is nil.
func (w *writePlan) createMissing(entries []*entry, paths []string) {
	for i, p := range paths {
		if entries[i] == nil {
			w.dirs = append(w.dirs, dataKey(p))
		}
	}
}

// putNode plans the node's new record: with a lease of its own for a TTL
// (ttl > 0), or else the inherited lease.
func (w *writePlan) putNode(p string, rec record, ttl, inherited int64) {
	w.nodeKey = dataKey(p)
	w.nodeRec = &rec
	if ttl > 0 {
		w.nodeOwnLease, w.leaseTTL = true, ttl
	} else {
		w.nodeLease = inherited
	}
}

func put(key, value []byte, lease int64) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Value: value, Lease: lease}}}
}

// txn is the write's Txn; lease is the lease granted for the node's TTL.
func (w *writePlan) txn(lease int64) *pb.TxnRequest {
	var ops []*pb.RequestOp
	dirRec := record{dir: true}.encode()
	for _, d := range w.dirs {
		ops = append(ops, put(d, dirRec, w.dirLease))
	}
	nodeLease := w.nodeLease
	if w.nodeOwnLease {
		nodeLease = lease
	}
	if w.nodeRec != nil {
		ops = append(ops, put(w.nodeKey, w.nodeRec.encode(), nodeLease))
	}
	for _, e := range w.moved {
		// Rewritten with the indexes v2 reports kept: v2 does not count
		// the move as a change.
		rec := e.rec
		rec.created, rec.modified = e.createdIndex(), e.modifiedIndex()
		ops = append(ops, put(e.kv.GetKey(), rec.encode(), nodeLease))
	}
	for _, d := range w.deletes {
		ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}})
	}
	ops = append(ops, put(journalKey, encodeJournal(w.silent, w.action, w.path), 0))
	return &pb.TxnRequest{Compare: w.compares, Success: ops}
}

// result is the committed write's answer.
func (w *writePlan) result(txn *pb.TxnResponse) *Result {
	rev := uint64(txn.GetHeader().GetRevision())
	w.node.ModifiedIndex = rev
	if w.newNode {
		w.node.CreatedIndex = rev
	}
	return &Result{Event: &Event{Action: w.action, Node: w.node, PrevNode: w.prevNode}, Index: rev, Term: txn.GetHeader().GetRaftTerm()}
}

// The journal value: 'n' (watchers are told) or 's' (a refresh), the
// action, a zero byte, the node's path.
func encodeJournal(silent bool, action, p string) []byte {
	flag := byte('n')
	if silent {
		flag = 's'
	}
	b := make([]byte, 0, 2+len(action)+len(p))
	b = append(b, flag)
	b = append(b, action...)
	b = append(b, 0)
	return append(b, p...)
}

func decodeJournal(v []byte) (silent bool, action, p string, ok bool) {
	if len(v) < 3 || (v[0] != 'n' && v[0] != 's') {
		return false, "", "", false
	}
	action, p, ok = strings.Cut(string(v[1:]), "\x00")
	if !ok || !strings.HasPrefix(p, "/") {
		return false, "", "", false
	}
	return v[0] == 's', action, p, true
}

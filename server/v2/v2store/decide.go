package v2store

import (
	"fmt"
	"path"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// maxLeaseTTLSeconds is etcd's upper bound on a lease's TTL.
const maxLeaseTTLSeconds = 9_000_000_000

// decide answers a request from what was read, as etcd 3.4's v2 store
// does (store.go: Get, Set, Create, Update, CompareAndSwap, Delete,
// CompareAndDelete), or plans the write that does it.
func decide(req *Request, st *readState, now time.Time) (*writePlan, *Result) {
	switch req.Method {
	case MethodGet:
		return nil, get(req, st, now)
	case MethodDelete:
		if req.PrevIndex > 0 || req.PrevValue != "" {
			return compareAndDelete(req, st, now)
		}
		return deleteNode(req, st, now)
	case MethodPost:
		return create(req, st, now, true)
	case MethodPut:
		switch {
		case req.PrevExist != nil && *req.PrevExist && req.PrevIndex == 0 && req.PrevValue == "":
			return update(req, st, now)
		case req.PrevExist != nil && !*req.PrevExist:
			return create(req, st, now, false)
		case req.PrevExist != nil, req.PrevIndex > 0 || req.PrevValue != "":
			return compareAndSwap(req, st, now)
		}
		return set(req, st, now)
	}
	return nil, st.errorAt(EcodeInvalidForm, fmt.Sprintf("method %s", req.Method))
}

func get(req *Request, st *readState, now time.Time) *Result {
	if err := st.walk(); err != nil {
		return &Result{Err: err, Index: uint64(st.rev), Term: st.term}
	}
	var n *Node
	if st.path == "/" {
		n = &Node{Dir: true}
	} else {
		n = st.node.node(now)
	}
	if n.Dir {
		n.Nodes = listing(st.children, st.path, req.Recursive, now)
	}
	return &Result{Event: &Event{Action: ActionGet, Node: n}, Index: uint64(st.rev), Term: st.term}
}

// listing renders the children of dir (all levels when recursive), in key
// order, leaving hidden nodes and everything below them out.
func listing(children []entry, dir string, recursive bool, now time.Time) []*Node {
	var top []*Node
	dirs := map[string]*Node{}
	for _, e := range children {
		if isHidden(e.path) {
			continue
		}
		parent := path.Dir(e.path)
		n := e.node(now)
		switch {
		case parent == dir:
			top = append(top, n)
		case recursive && dirs[parent] != nil:
			dirs[parent].Nodes = append(dirs[parent].Nodes, n)
		default:
			continue
		}
		if recursive && e.rec.dir {
			dirs[e.path] = n
		}
	}
	return top
}

// expiry is the record expiration and lease TTL for a request's TTL.
func expiry(req *Request, now time.Time) (expireUnixNs, leaseTTL int64) {
	if req.TTL == nil {
		return 0, 0
	}
	ttl := min(*req.TTL, maxLeaseTTLSeconds)
	return now.Add(time.Duration(ttl) * time.Second).UnixNano(), max(int64(ttl), 1)
}

func set(req *Request, st *readState, now time.Time) (*writePlan, *Result) {
	p := req.Path
	if p == "/" {
		return nil, st.errorAt(EcodeRootROnly, "/")
	}
	if err := st.fileAncestor(); err != nil {
		return nil, &Result{Err: err, Index: uint64(st.rev), Term: st.term}
	}
	value := req.Value
	if req.Refresh {
		if err := st.walk(); err != nil {
			return nil, &Result{Err: err, Index: uint64(st.rev), Term: st.term}
		}
		value = st.node.rec.value
	}
	if st.node != nil && st.node.rec.dir {
		return nil, st.errorAt(EcodeNotFile, p)
	}
	w := newPlan(st, ActionSet, p)
	w.silent = req.Refresh
	w.createMissing(st.ancestors, ancestors(p))
	expire, ttl := expiry(req, now)
	w.putNode(p, record{dir: req.Dir, value: fileValue(req.Dir, value), expireUnixNs: expire}, ttl, st.inheritedLease())
	w.newNode = true
	w.node = &Node{Key: p, Dir: req.Dir}
	if !req.Dir {
		v := value
		w.node.Value = &v
	}
	w.node.Expiration, w.node.TTL = expirationAndTTL(expire, now)
	if st.node != nil {
		w.prevNode = st.node.node(now)
		w.revokeOwn(st.node)
	}
	return w, nil
}

func create(req *Request, st *readState, now time.Time, unique bool) (*writePlan, *Result) {
	p := req.Path
	created := st.ancestors
	createdPaths := ancestors(p)
	if unique {
		// In-order keys are named by the index they are created at: the
		// read's revision plus one when nothing else writes in between, and
		// in any case above every earlier in-order key, which was written
		// at or before the read.
		if st.node != nil && !st.node.rec.dir {
			return nil, st.errorAt(EcodeNotDir, p)
		}
		if p != "/" {
			created = append(append([]*entry(nil), st.ancestors...), st.node)
			createdPaths = append(createdPaths, p)
		}
		p = path.Join(p, fmt.Sprintf("%020d", st.rev+1))
	} else if p == "/" {
		return nil, st.errorAt(EcodeRootROnly, "/")
	}
	if err := st.fileAncestor(); err != nil {
		return nil, &Result{Err: err, Index: uint64(st.rev), Term: st.term}
	}
	if !unique && st.node != nil {
		return nil, st.errorAt(EcodeNodeExist, p)
	}
	w := newPlan(st, ActionCreate, p)
	w.createMissing(created, createdPaths)
	expire, ttl := expiry(req, now)
	inherited := st.inheritedLease()
	if unique && st.node != nil {
		inherited = st.node.kv.GetLease()
	}
	w.putNode(p, record{dir: req.Dir, value: fileValue(req.Dir, req.Value), expireUnixNs: expire}, ttl, inherited)
	if unique {
		w.compares = append(w.compares, modEqual(dataKey(p), 0))
	}
	w.newNode = true
	w.node = &Node{Key: p, Dir: req.Dir}
	if !req.Dir {
		v := req.Value
		w.node.Value = &v
	}
	w.node.Expiration, w.node.TTL = expirationAndTTL(expire, now)
	return w, nil
}

// existing is the node a write that needs one acts on, as etcd's
// internalGet finds it (the root is read only).
func existing(st *readState) (*entry, *Result) {
	if st.path == "/" {
		return nil, st.errorAt(EcodeRootROnly, "/")
	}
	if err := st.walk(); err != nil {
		return nil, &Result{Err: err, Index: uint64(st.rev), Term: st.term}
	}
	return st.node, nil
}

// compared is the file a compare-and-swap or compare-and-delete acts on,
// when prevValue and prevIndex hold.
func compared(req *Request, st *readState) (*entry, *Result) {
	n, res := existing(st)
	switch {
	case res != nil:
		return nil, res
	case n.rec.dir:
		return nil, st.errorAt(EcodeNotFile, st.path)
	}
	if cause, ok := compareNode(n, req.PrevValue, req.PrevIndex); !ok {
		return nil, st.errorAt(EcodeTestFailed, cause)
	}
	return n, nil
}

func update(req *Request, st *readState, now time.Time) (*writePlan, *Result) {
	p := req.Path
	n, res := existing(st)
	if res != nil {
		return nil, res
	}
	if n.rec.dir && req.Value != "" {
		return nil, st.errorAt(EcodeNotFile, p)
	}
	value := req.Value
	if req.Refresh {
		value = n.rec.value
	}
	w := newPlan(st, ActionUpdate, p)
	w.silent = req.Refresh
	expire, ttl := expiry(req, now)
	w.putNode(p, record{dir: n.rec.dir, value: fileValue(n.rec.dir, value), created: n.createdIndex(), expireUnixNs: expire}, ttl, st.inheritedLease())
	if n.rec.dir {
		// The nodes below that share the directory's lease move with it
		// to its new one (or to none).
		for _, c := range st.children {
			if c.kv.GetLease() == n.kv.GetLease() {
				w.moved = append(w.moved, c)
			}
		}
		if len(w.moved) > 0 {
			key, end := subtree(p)
			w.compares = append(w.compares, &pb.Compare{Key: key, RangeEnd: end, Target: pb.Compare_MOD, Result: pb.Compare_LESS,
				TargetUnion: &pb.Compare_ModRevision{ModRevision: st.rev + 1}})
		}
	}
	w.node = &Node{Key: p, Dir: n.rec.dir, CreatedIndex: n.createdIndex()}
	if !n.rec.dir {
		v := value
		w.node.Value = &v
	}
	w.node.Expiration, w.node.TTL = expirationAndTTL(expire, now)
	w.prevNode = n.node(now)
	w.revokeOwn(n)
	return w, nil
}

func compareAndSwap(req *Request, st *readState, now time.Time) (*writePlan, *Result) {
	p := req.Path
	n, res := compared(req, st)
	if res != nil {
		return nil, res
	}
	value := req.Value
	if req.Refresh {
		value = n.rec.value
	}
	w := newPlan(st, ActionCompareAndSwap, p)
	w.silent = req.Refresh
	expire, ttl := expiry(req, now)
	w.putNode(p, record{value: value, created: n.createdIndex(), expireUnixNs: expire}, ttl, st.inheritedLease())
	v := value
	w.node = &Node{Key: p, Value: &v, CreatedIndex: n.createdIndex()}
	w.node.Expiration, w.node.TTL = expirationAndTTL(expire, now)
	w.prevNode = n.node(now)
	w.revokeOwn(n)
	return w, nil
}

func deleteNode(req *Request, st *readState, now time.Time) (*writePlan, *Result) {
	p := req.Path
	n, res := existing(st)
	if res != nil {
		return nil, res
	}
	if n.rec.dir {
		if !req.Dir && !req.Recursive {
			return nil, st.errorAt(EcodeNotFile, p)
		}
		if !req.Recursive && len(st.children) > 0 {
			return nil, st.errorAt(EcodeDirNotEmpty, p)
		}
	}
	w := newPlan(st, ActionDelete, p)
	w.deletes = append(w.deletes, &pb.DeleteRangeRequest{Key: dataKey(p)})
	if n.rec.dir {
		key, end := subtree(p)
		if req.Recursive {
			w.deletes = append(w.deletes, &pb.DeleteRangeRequest{Key: key, RangeEnd: end})
		} else {
			// Still empty: nothing was created below since the read.
			w.compares = append(w.compares, &pb.Compare{Key: key, RangeEnd: end, Target: pb.Compare_MOD, Result: pb.Compare_LESS,
				TargetUnion: &pb.Compare_ModRevision{ModRevision: st.rev + 1}})
		}
	}
	w.node = &Node{Key: p, Dir: n.rec.dir, CreatedIndex: n.createdIndex()}
	w.prevNode = n.node(now)
	w.revokeOwn(n)
	if n.rec.dir && req.Recursive {
		for i := range st.children {
			w.revokeOwn(&st.children[i])
		}
	}
	return w, nil
}

func compareAndDelete(req *Request, st *readState, now time.Time) (*writePlan, *Result) {
	p := req.Path
	n, res := compared(req, st)
	if res != nil {
		return nil, res
	}
	w := newPlan(st, ActionCompareAndDelete, p)
	w.deletes = append(w.deletes, &pb.DeleteRangeRequest{Key: dataKey(p)})
	w.node = &Node{Key: p, CreatedIndex: n.createdIndex()}
	w.prevNode = n.node(now)
	w.revokeOwn(n)
	return w, nil
}

// compareNode is etcd's node.Compare with its failure cause.
func compareNode(n *entry, prevValue string, prevIndex uint64) (string, bool) {
	indexMatch := prevIndex == 0 || n.modifiedIndex() == prevIndex
	valueMatch := prevValue == "" || n.rec.value == prevValue
	switch {
	case indexMatch && valueMatch:
		return "", true
	case indexMatch:
		return fmt.Sprintf("[%v != %v]", prevValue, n.rec.value), false
	case valueMatch:
		return fmt.Sprintf("[%v != %v]", prevIndex, n.modifiedIndex()), false
	}
	return fmt.Sprintf("[%v != %v] [%v != %v]", prevValue, n.rec.value, prevIndex, n.modifiedIndex()), false
}

func fileValue(dir bool, v string) string {
	if dir {
		return ""
	}
	return v
}

func modEqual(key []byte, rev int64) *pb.Compare {
	return &pb.Compare{Key: key, Target: pb.Compare_MOD, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_ModRevision{ModRevision: rev}}
}

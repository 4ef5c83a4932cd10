package v2store

// A model-based test: random v2 requests (set, create, in-order create,
// update, compare-and-swap, delete, compare-and-delete, directories,
// TTLs and their expiry, gets) run through Op against a real kvsm store,
// and through a small in-memory tree that implements etcd's v2 store
// semantics directly. Every answer must agree field by field; at the end
// waits from index 1 (recursive on the root, and on random paths) must
// see exactly the events the model logged.

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"sort"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/noded/noded/kvsm"
)

// modelNode is one node of the reference tree.
type modelNode struct {
	dir               bool
	value             string
	created, modified uint64
	expire            int64 // unix ns, 0: none
	group             int   // the TTL group it expires with (0: never)
}

type modelEvent struct {
	ev      *Event
	deleted map[string]bool
}

type model struct {
	nodes     map[string]*modelNode
	index     uint64
	nextGroup int
	events    []modelEvent
}

func newModel(index uint64) *model {
	return &model{nodes: map[string]*modelNode{}, index: index}
}

func (m *model) clone() *model {
	c := *m
	c.nodes = map[string]*modelNode{}
	for k, n := range m.nodes { // noded:map-order-ok: copied into a map
		cp := *n
		c.nodes[k] = &cp
	}
	c.events = append([]modelEvent(nil), m.events...)
	return &c
}

func (m *model) nodeOf(p string, now time.Time) *Node {
	n := m.nodes[p]
	out := &Node{Key: p, Dir: n.dir, ModifiedIndex: n.modified, CreatedIndex: n.created}
	if !n.dir {
		v := n.value
		out.Value = &v
	}
	out.Expiration, out.TTL = expirationAndTTL(n.expire, now)
	return out
}

func (m *model) err(code int, cause string) *Result {
	return &Result{Err: NewError(code, cause, m.index)}
}

// walk: the first missing or file ancestor, then the node.
func (m *model) walk(p string) *Result {
	for _, a := range ancestors(p) {
		n := m.nodes[a]
		if n == nil {
			return m.err(EcodeKeyNotFound, a)
		}
		if !n.dir {
			return m.err(EcodeNotDir, a)
		}
	}
	if p != "/" && m.nodes[p] == nil {
		return m.err(EcodeKeyNotFound, p)
	}
	return nil
}

func (m *model) children(p string) []string {
	var out []string
	for k := range m.nodes { // noded:map-order-ok: sorted below
		if path.Dir(k) == p && k != p {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func (m *model) descendants(p string) []string {
	var out []string
	for k := range m.nodes { // noded:map-order-ok: sorted below
		if strings.HasPrefix(k, p+"/") || (p == "/" && k != "/") {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func (m *model) list(p string, recursive bool, now time.Time) []*Node {
	var out []*Node
	for _, c := range m.children(p) {
		if isHidden(c) {
			continue
		}
		n := m.nodeOf(c, now)
		if recursive && m.nodes[c].dir {
			n.Nodes = m.list(c, true, now)
		}
		out = append(out, n)
	}
	return out
}

func (m *model) groupAbove(p string) int {
	as := ancestors(p)
	for i := len(as) - 1; i >= 0; i-- {
		if n := m.nodes[as[i]]; n != nil {
			return n.group
		}
	}
	return 0
}

func (m *model) apply(req *Request, now time.Time) *Result {
	p := req.Path
	expire, group := int64(0), 0
	newGroup := func() {
		if req.TTL != nil {
			expire = now.Add(time.Duration(*req.TTL) * time.Second).UnixNano()
			m.nextGroup++
			group = m.nextGroup
		}
	}
	write := func(action string, node, prev *Node, deleted map[string]bool, silent bool) *Result {
		ev := &Event{Action: action, Node: node, PrevNode: prev}
		if !silent {
			m.events = append(m.events, modelEvent{ev: ev, deleted: deleted})
		}
		return &Result{Event: ev, Index: m.index}
	}
	mkdirs := func(p string, g int) {
		for _, a := range ancestors(p) {
			if m.nodes[a] == nil {
				m.nodes[a] = &modelNode{dir: true, created: m.index, modified: m.index, group: g}
			}
		}
	}
	// newNode makes node p (and the directories above it) at the next index.
	newNode := func(p, value string) {
		inherited := m.groupAbove(p)
		m.index++
		mkdirs(p, inherited)
		newGroup()
		if group == 0 {
			group = inherited
		}
		m.nodes[p] = &modelNode{dir: req.Dir, value: fileValue(req.Dir, value), created: m.index, modified: m.index, expire: expire, group: group}
	}
	switch req.Method {
	case MethodGet:
		if r := m.walk(p); r != nil {
			return r
		}
		var n *Node
		if p == "/" {
			n = &Node{Dir: true}
		} else {
			n = m.nodeOf(p, now)
		}
		if n.Dir {
			n.Nodes = m.list(p, req.Recursive, now)
		}
		return &Result{Event: &Event{Action: ActionGet, Node: n}, Index: m.index}
	case MethodDelete:
		if p == "/" {
			return m.err(EcodeRootROnly, "/")
		}
		if r := m.walk(p); r != nil {
			return r
		}
		n := m.nodes[p]
		prev := m.nodeOf(p, now)
		action := ActionDelete
		if req.PrevIndex > 0 || req.PrevValue != "" {
			if n.dir {
				return m.err(EcodeNotFile, p)
			}
			if cause, ok := m.compare(n, req.PrevValue, req.PrevIndex); !ok {
				return m.err(EcodeTestFailed, cause)
			}
			action = ActionCompareAndDelete
		} else if n.dir {
			if !req.Dir && !req.Recursive {
				return m.err(EcodeNotFile, p)
			}
			if !req.Recursive && len(m.children(p)) > 0 {
				return m.err(EcodeDirNotEmpty, p)
			}
		}
		m.index++
		deleted := map[string]bool{p: true}
		for _, d := range m.descendants(p) {
			deleted[d] = true
			delete(m.nodes, d)
		}
		delete(m.nodes, p)
		node := &Node{Key: p, Dir: n.dir && action == ActionDelete, ModifiedIndex: m.index, CreatedIndex: n.created}
		return write(action, node, prev, deleted, false)
	case MethodPost, MethodPut:
		create := req.Method == MethodPost || (req.PrevExist != nil && !*req.PrevExist)
		cas := !create && (req.PrevIndex > 0 || req.PrevValue != "")
		update := !create && !cas && req.PrevExist != nil && *req.PrevExist
		switch {
		case create:
			unique := req.Method == MethodPost
			if unique {
				if n := m.nodes[p]; n != nil && !n.dir {
					return m.err(EcodeNotDir, p)
				}
				p = path.Join(p, fmt.Sprintf("%020d", m.index+1))
			} else if p == "/" {
				return m.err(EcodeRootROnly, "/")
			}
			for _, a := range ancestors(p) {
				if n := m.nodes[a]; n != nil && !n.dir {
					return m.err(EcodeNotDir, a)
				}
			}
			if m.nodes[p] != nil {
				return m.err(EcodeNodeExist, p)
			}
			newNode(p, req.Value)
			return write(ActionCreate, m.nodeOf(p, now), nil, nil, false)
		case update, cas:
			if p == "/" {
				return m.err(EcodeRootROnly, "/")
			}
			if r := m.walk(p); r != nil {
				return r
			}
			n := m.nodes[p]
			action := ActionUpdate
			if cas {
				if n.dir {
					return m.err(EcodeNotFile, p)
				}
				if cause, ok := m.compare(n, req.PrevValue, req.PrevIndex); !ok {
					return m.err(EcodeTestFailed, cause)
				}
				action = ActionCompareAndSwap
			} else if n.dir && req.Value != "" {
				return m.err(EcodeNotFile, p)
			}
			prev := m.nodeOf(p, now)
			value := req.Value
			if req.Refresh {
				value = n.value
			}
			m.index++
			newGroup()
			if group == 0 {
				group = m.groupAbove(p)
			}
			if n.dir {
				for _, d := range m.descendants(p) {
					if m.nodes[d].group == n.group {
						m.nodes[d].group = group
					}
				}
			}
			n.value, n.modified, n.expire, n.group = fileValue(n.dir, value), m.index, expire, group
			return write(action, m.nodeOf(p, now), prev, nil, req.Refresh)
		default: // set
			if p == "/" {
				return m.err(EcodeRootROnly, "/")
			}
			for _, a := range ancestors(p) {
				if n := m.nodes[a]; n != nil && !n.dir {
					return m.err(EcodeNotDir, a)
				}
			}
			value := req.Value
			if req.Refresh {
				if r := m.walk(p); r != nil {
					return r
				}
				value = m.nodes[p].value
			}
			var prev *Node
			if n := m.nodes[p]; n != nil {
				if n.dir {
					return m.err(EcodeNotFile, p)
				}
				prev = m.nodeOf(p, now)
			}
			newNode(p, value)
			return write(ActionSet, m.nodeOf(p, now), prev, nil, req.Refresh)
		}
	}
	panic("unreachable")
}

func (m *model) compare(n *modelNode, prevValue string, prevIndex uint64) (string, bool) {
	indexMatch := prevIndex == 0 || n.modified == prevIndex
	valueMatch := prevValue == "" || n.value == prevValue
	switch {
	case indexMatch && valueMatch:
		return "", true
	case indexMatch:
		return fmt.Sprintf("[%v != %v]", prevValue, n.value), false
	case valueMatch:
		return fmt.Sprintf("[%v != %v]", prevIndex, n.modified), false
	}
	return fmt.Sprintf("[%v != %v] [%v != %v]", prevValue, n.value, prevIndex, n.modified), false
}

// expire removes every node of p's TTL group, as the lease expiry does.
func (m *model) expire(p string, now time.Time) {
	g := m.nodes[p].group
	deleted := map[string]bool{}
	var gone []string
	for k, n := range m.nodes { // noded:map-order-ok: sorted below
		if n.group == g {
			gone = append(gone, k)
		}
	}
	sort.Strings(gone)
	m.index++
	prevs := map[string]*Node{}
	for _, k := range gone {
		prevs[k] = m.nodeOf(k, now)
		deleted[k] = true
	}
	for _, k := range gone {
		delete(m.nodes, k)
	}
	for _, k := range gone {
		if parentDeleted(k, deleted) {
			continue
		}
		m.events = append(m.events, modelEvent{ev: &Event{Action: ActionExpire,
			Node: &Node{Key: k, Dir: prevs[k].Dir, ModifiedIndex: m.index, CreatedIndex: prevs[k].CreatedIndex}, PrevNode: prevs[k]}, deleted: deleted})
	}
}

// harness runs Ops against a kvsm store.
type harness struct {
	t     *rapid.T
	store *kvsm.Store
	// unusedLeases counts requests that were granted a lease and then
	// failed: their leases hold no key until they expire. No other lease
	// may be left without keys.
	unusedLeases int
	grants       int // lease grants so far
	last         *Result
}

func (h *harness) apply(req proto.Message) (proto.Message, error) {
	if _, ok := req.(*pb.LeaseGrantRequest); ok {
		h.grants++
	}
	var ir pb.InternalRaftRequest
	switch r := req.(type) {
	case *pb.TxnRequest:
		ir.Txn = r
	case *pb.LeaseGrantRequest:
		ir.LeaseGrant = r
	case *pb.LeaseRevokeRequest:
		ir.LeaseRevoke = r
	default:
		h.t.Fatalf("unexpected request %T", req)
	}
	res := h.store.Apply(&ir)
	return res.Resp, res.Err
}

func (h *harness) run(req *Request, now time.Time) *Result {
	grants := h.grants
	defer func() {
		if h.grants > grants && h.last != nil && h.last.Err != nil {
			h.unusedLeases++
		}
	}()
	op := NewOp(req)
	next, res := op.Start()
	for steps := 0; res == nil; steps++ {
		if steps > 3*writeAttemptsMax {
			h.t.Fatalf("op %+v does not finish", req)
		}
		resp, err := h.apply(next)
		next, res = op.Step(resp, err, now)
	}
	h.last = res
	return res
}

// differ describes how a result differs from the model's, or is "".
func differ(got, want *Result) string {
	if got.Err != nil || want.Err != nil {
		if canon(got.Err) != canon(want.Err) {
			return fmt.Sprintf("got error %s, model %s", canon(got.Err), canon(want.Err))
		}
		return ""
	}
	if canon(got.Event) != canon(want.Event) || got.Index != want.Index {
		return fmt.Sprintf("\n got  %s index %d\n want %s index %d", canon(got.Event), got.Index, canon(want.Event), want.Index)
	}
	return ""
}

// canonNoTTL renders an event without its ttl fields: a wait reports the
// seconds left when it delivers the event, the model when it made it.
func canonNoTTL(ev *Event) string {
	c := *ev
	for _, n := range []**Node{&c.Node, &c.PrevNode} {
		if *n != nil {
			cp := **n
			cp.TTL = 0
			*n = &cp
		}
	}
	return canon(&c)
}

func canon(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestRapidModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		h := &harness{t: t, store: kvsm.New(kvsm.Config{})}
		m := newModel(uint64(h.store.Rev()))
		now := time.Unix(1_700_000_000, 0)
		names := []string{"a", "b", "_h", "c"}
		genPath := func(label string) string {
			depth := rapid.IntRange(0, 3).Draw(t, label+" depth")
			p := "/"
			for i := 0; i < depth; i++ {
				p = path.Join(p, rapid.SampledFrom(names).Draw(t, label+" name"))
			}
			return p
		}
		steps := rapid.IntRange(1, 60).Draw(t, "steps")
		for i := 0; i < steps; i++ {
			now = now.Add(time.Duration(rapid.IntRange(0, 2000).Draw(t, "ms")) * time.Millisecond)
			if rapid.IntRange(0, 9).Draw(t, "expire?") == 0 {
				// Expire a node with a TTL: revoke its lease, as the leader would.
				var ttlNodes []string
				for p, n := range m.nodes { // noded:map-order-ok: sorted below
					if n.group != 0 {
						ttlNodes = append(ttlNodes, p)
					}
				}
				sort.Strings(ttlNodes)
				if len(ttlNodes) > 0 {
					p := rapid.SampledFrom(ttlNodes).Draw(t, "expire")
					rr, err := h.store.Range(&pb.RangeRequest{Key: dataKey(p)})
					if err != nil || len(rr.GetKvs()) != 1 || rr.GetKvs()[0].GetLease() == 0 {
						t.Fatalf("node %s has a TTL in the model but no lease in the store: %v %v", p, rr, err)
					}
					if _, err := h.apply(&pb.LeaseRevokeRequest{ID: rr.GetKvs()[0].GetLease()}); err != nil {
						t.Fatalf("revoke: %v", err)
					}
					m.expire(p, now)
					continue
				}
			}
			form := url.Values{}
			method := rapid.SampledFrom([]string{MethodGet, MethodGet, MethodPut, MethodPut, MethodPut, MethodPost, MethodDelete}).Draw(t, "method")
			p := genPath("path")
			setIf := func(name string, gen *rapid.Generator[string]) {
				if rapid.IntRange(0, 3).Draw(t, name+"?") == 0 {
					form.Set(name, gen.Draw(t, name))
				}
			}
			boolGen := rapid.SampledFrom([]string{"true", "false"})
			switch method {
			case MethodGet:
				setIf("recursive", boolGen)
				setIf("sorted", boolGen)
				setIf("quorum", boolGen)
			case MethodPut, MethodPost:
				form.Set("value", rapid.SampledFrom([]string{"", "x", "y", fmt.Sprintf("v%d", i)}).Draw(t, "value"))
				setIf("dir", boolGen)
				setIf("prevExist", boolGen)
				setIf("prevValue", rapid.SampledFrom([]string{"x", "y", "v1"}))
				setIf("prevIndex", rapid.SampledFrom([]string{"1", "2", "3", "5", fmt.Sprint(m.index)}))
				setIf("ttl", rapid.SampledFrom([]string{"5", "60", ""}))
				if rapid.IntRange(0, 8).Draw(t, "refresh?") == 0 {
					form = url.Values{"refresh": {"true"}, "ttl": {"30"}, "prevExist": {"true"}}
				}
			case MethodDelete:
				setIf("dir", boolGen)
				setIf("recursive", boolGen)
				setIf("prevValue", rapid.SampledFrom([]string{"x", "y"}))
				setIf("prevIndex", rapid.SampledFrom([]string{"2", "3", fmt.Sprint(m.index)}))
			}
			req, perr := ParseRequest(method, p, form)
			if perr != nil {
				continue
			}
			var got, want *Result
			// (An in-order key is named by its read's index, which another
			// write committing in between makes lower than its created
			// index: in-order keys are never interleaved here.)
			if req.IsWrite() && method != MethodPost && rapid.IntRange(0, 3).Draw(t, "interleave?") == 0 {
				// Another write commits between this one's read and its Txn:
				// the Txn's compares must notice when that matters, so that
				// the outcome is the one of the two in commit order.
				other := &Request{Method: MethodPut, Path: genPath("other path"), Value: "o"}
				if rapid.Bool().Draw(t, "other deletes?") {
					other = &Request{Method: MethodDelete, Path: other.Path, Recursive: true}
				}
				before := m.clone()
				grants := h.grants
				op := NewOp(req)
				next, res := op.Start()
				resp, err := h.apply(next)
				if diff := differ(h.run(other, now), m.apply(other, now)); diff != "" {
					t.Fatalf("interleaved %+v: %s", other, diff)
				}
				for steps := 0; res == nil; steps++ {
					if steps > 3*writeAttemptsMax {
						t.Fatalf("op %+v does not finish", req)
					}
					next, res = op.Step(resp, err, now)
					if res == nil {
						resp, err = h.apply(next)
					}
				}
				got = res
				if h.grants > grants && got.Err != nil {
					h.unusedLeases++
				}
				// An error decided on the first read is ordered before the
				// other write; anything else after it.
				if alt := before.apply(req, now); got.Err != nil && alt.Err != nil && differ(got, alt) == "" {
					continue
				}
				want = m.apply(req, now)
			} else {
				got, want = h.run(req, now), m.apply(req, now)
			}
			if diff := differ(got, want); diff != "" {
				t.Fatalf("%s %s %v: %s", method, p, form, diff)
			}
		}
		if err := h.store.CheckInvariants(); err != nil {
			t.Fatal(err)
		}
		// Leases of replaced and deleted TTLs are revoked, not left to expire.
		empty := 0
		for _, l := range h.store.Leases() {
			if len(l.Keys) == 0 {
				empty++
			}
		}
		if empty > h.unusedLeases {
			t.Fatalf("%d leases hold no key; only %d requests failed after a grant", empty, h.unusedLeases)
		}
		// Waits from the start see the model's events.
		for w := 0; w < 3; w++ {
			p, recursive := "/", true
			if w > 0 {
				p, recursive = genPath("watch path"), rapid.Bool().Draw(t, "watch recursive")
			}
			checkWaits(t, h.store, m, p, recursive, now)
		}
	})
}

func checkWaits(t *rapid.T, store *kvsm.Store, m *model, p string, recursive bool, now time.Time) {
	req := &Request{Method: MethodGet, Path: p, Wait: true, WaitIndex: 1, Recursive: recursive}
	w := NewWatcher(req)
	stream := kvsm.StreamID(1)
	created := store.WatchCreate(stream, w.CreateRequest())
	if _, err := w.Created(created); err != nil {
		t.Fatalf("watch %s: %v", p, err)
	}
	var got []string
	for _, sr := range store.WatchPoll(1 << 20) {
		evs, err := w.Events(sr.Resp, now)
		if err != nil {
			t.Fatalf("watch %s: %v", p, err)
		}
		for _, ev := range evs {
			got = append(got, canonNoTTL(ev))
		}
	}
	store.WatchCloseStream(stream)
	var want []string
	for _, me := range m.events {
		if modelSelects(p, recursive, me.ev.Node.Key, me.deleted) {
			want = append(want, canonNoTTL(me.ev))
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("wait on %s (recursive %v) from index 1:\n got\n%s\n want\n%s", p, recursive, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// modelSelects is etcd 3.4's watcherHub.notify written out: the event is
// offered to watchers at every path from the root down to its key (a
// recursive one takes it unless a hidden element lies between, the one at
// the key always takes it), and a deletion offers it to watchers at every
// node it removed.
func modelSelects(watched string, recursive bool, key string, deleted map[string]bool) bool {
	at := "/"
	for _, el := range strings.Split(key, "/") {
		at = path.Join(at, el)
		if at != watched {
			continue
		}
		original := key == at
		after := path.Clean("/" + key[len(at):])
		if (original || !strings.Contains(after, "/_")) && (recursive || original) {
			return true
		}
	}
	return deleted[watched]
}

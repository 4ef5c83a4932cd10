package kvsm

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"hash/crc32"
	"hash/fnv"
	"math"
	"slices"
	"sort"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"
)

// The reference model: a map from key to its whole kept history, every
// question answered by brute force over it. It knows nothing of the store's
// trees, revision log or entry layout; it is etcd's data model written as
// plainly as possible. TestModel drives the store and the model with the
// same random requests and demands identical responses, errors, events and
// state hashes.

type mRev struct {
	main, sub int64
	value     []byte
	create    int64
	version   int64 // 0: tombstone
	lease     int64
}

type model struct {
	cfg         Config
	hist        map[string][]mRev
	rev         int64
	compactRev  int64
	nextLeaseID int64
	leases      map[int64]int64 // id -> granted TTL
}

func newModel(cfg Config) *model {
	return &model{cfg: cfg, hist: map[string][]mRev{}, rev: 1, nextLeaseID: 1, leases: map[int64]int64{}}
}

func (m *model) keys() []string {
	var ks []string
	for k := range m.hist {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// at is the key's revision visible at atRev.
func (m *model) at(k string, atRev int64) (mRev, bool) {
	var best *mRev
	for i := range m.hist[k] {
		if r := &m.hist[k][i]; r.main <= atRev {
			best = r
		}
	}
	if best == nil || best.version == 0 {
		return mRev{}, false
	}
	return *best, true
}

func (m *model) live(k string) (mRev, bool) { return m.at(k, math.MaxInt64) }

func inSpan(key, end []byte, k string) bool {
	switch {
	case len(end) == 0:
		return k == string(key)
	case len(end) == 1 && end[0] == 0:
		return k >= string(key)
	default:
		return k >= string(key) && k < string(end)
	}
}

func (r mRev) kv(k string) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(k), CreateRevision: r.create, ModRevision: r.main, Version: r.version, Value: r.value, Lease: r.lease}
}

type mKV struct {
	k string
	r mRev
}

func (m *model) rangeAt(r *pb.RangeRequest, curRev int64) (*pb.RangeResponse, error) {
	atRev := r.Revision
	if atRev > curRev {
		return nil, rpctypes.ErrGRPCFutureRev
	}
	if atRev <= 0 {
		atRev = curRev
	}
	if atRev < m.compactRev {
		return nil, rpctypes.ErrGRPCCompacted
	}
	var found []mKV
	for _, k := range m.keys() {
		if !inSpan(r.Key, r.RangeEnd, k) {
			continue
		}
		if rev, ok := m.at(k, atRev); ok {
			found = append(found, mKV{k, rev})
		}
	}
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: curRev}, Count: int64(len(found))}
	if r.CountOnly {
		return resp, nil
	}
	// etcd reads only limit+1 keys (in key order) unless the request sorts
	// explicitly or filters; a target with order NONE then sorts just those.
	explicitSort := r.SortOrder != pb.RangeRequest_NONE && !(r.SortTarget == pb.RangeRequest_KEY && r.SortOrder == pb.RangeRequest_ASCEND)
	filters := r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0
	if r.Limit > 0 && !explicitSort && !filters && int64(len(found)) > r.Limit+1 {
		found = found[:r.Limit+1]
	}
	var kept []mKV
	for _, f := range found {
		if (r.MaxModRevision != 0 && f.r.main > r.MaxModRevision) || (r.MinModRevision != 0 && f.r.main < r.MinModRevision) ||
			(r.MaxCreateRevision != 0 && f.r.create > r.MaxCreateRevision) || (r.MinCreateRevision != 0 && f.r.create < r.MinCreateRevision) {
			continue
		}
		kept = append(kept, f)
	}
	order := r.SortOrder
	if r.SortTarget != pb.RangeRequest_KEY && order == pb.RangeRequest_NONE {
		order = pb.RangeRequest_ASCEND
	}
	if order != pb.RangeRequest_NONE {
		var c func(a, b mKV) int
		switch r.SortTarget {
		case pb.RangeRequest_KEY:
			c = func(a, b mKV) int { return cmp.Compare(a.k, b.k) }
		case pb.RangeRequest_VERSION:
			c = func(a, b mKV) int { return cmp.Compare(a.r.version, b.r.version) }
		case pb.RangeRequest_CREATE:
			c = func(a, b mKV) int { return cmp.Compare(a.r.create, b.r.create) }
		case pb.RangeRequest_MOD:
			c = func(a, b mKV) int { return cmp.Compare(a.r.main, b.r.main) }
		case pb.RangeRequest_VALUE:
			c = func(a, b mKV) int { return bytes.Compare(a.r.value, b.r.value) }
		}
		if order == pb.RangeRequest_DESCEND {
			asc := c
			c = func(a, b mKV) int { return asc(b, a) }
		}
		if r.SortTarget == pb.RangeRequest_KEY && order == pb.RangeRequest_DESCEND {
			slices.Reverse(kept)
		} else if !(r.SortTarget == pb.RangeRequest_KEY && order == pb.RangeRequest_ASCEND) {
			// etcd's comparator over the same key-ordered input: ties
			// land where etcd's sort puts them.
			slices.SortFunc(kept, c)
		}
	}
	if r.Limit > 0 && int64(len(kept)) > r.Limit {
		kept = kept[:r.Limit]
		resp.More = true
	}
	for _, f := range kept {
		kv := f.r.kv(f.k)
		if r.KeysOnly {
			kv.Value = nil
		}
		resp.Kvs = append(resp.Kvs, kv)
	}
	return resp, nil
}

// mWrite is one main revision being written.
type mWrite struct {
	m      *model
	events []*mvccpb.Event
}

func (w *mWrite) main() int64 { return w.m.rev + 1 }

func (w *mWrite) readRev() int64 {
	if len(w.events) > 0 {
		return w.m.rev + 1
	}
	return w.m.rev
}

func (w *mWrite) put(k string, value []byte, lease int64) {
	r := mRev{main: w.main(), sub: int64(len(w.events)), value: append([]byte{}, value...), create: w.main(), version: 1, lease: lease}
	if cur, ok := w.m.live(k); ok {
		r.create, r.version = cur.create, cur.version+1
	}
	w.m.hist[k] = append(w.m.hist[k], r)
	w.events = append(w.events, &mvccpb.Event{Type: mvccpb.Event_PUT, Kv: r.kv(k)})
}

func (w *mWrite) del(key, end []byte) int64 {
	var n int64
	for _, k := range w.m.keys() {
		if _, ok := w.m.live(k); ok && inSpan(key, end, k) {
			w.m.hist[k] = append(w.m.hist[k], mRev{main: w.main(), sub: int64(len(w.events))})
			w.events = append(w.events, &mvccpb.Event{Type: mvccpb.Event_DELETE, Kv: &mvccpb.KeyValue{Key: []byte(k), ModRevision: w.main()}})
			n++
		}
	}
	return n
}

func (w *mWrite) end() []*mvccpb.Event {
	if len(w.events) > 0 {
		w.m.rev++
	}
	return w.events
}

func (m *model) checkPut(p *pb.PutRequest) error {
	if p.IgnoreValue || p.IgnoreLease {
		if _, ok := m.live(string(p.Key)); !ok {
			return rpctypes.ErrGRPCKeyNotFound
		}
	}
	if _, ok := m.leases[p.Lease]; p.Lease != 0 && !ok {
		return rpctypes.ErrGRPCLeaseNotFound
	}
	return nil
}

func (w *mWrite) execPut(p *pb.PutRequest) *pb.PutResponse {
	resp := &pb.PutResponse{Header: &pb.ResponseHeader{Revision: w.main()}}
	value, lease := p.Value, p.Lease
	if cur, ok := w.m.live(string(p.Key)); ok {
		if p.IgnoreValue {
			value = cur.value
		}
		if p.IgnoreLease {
			lease = cur.lease
		}
		if p.PrevKv {
			resp.PrevKv = cur.kv(string(p.Key))
		}
	}
	w.put(string(p.Key), value, lease)
	return resp
}

func (w *mWrite) execDelete(d *pb.DeleteRangeRequest) *pb.DeleteRangeResponse {
	resp := &pb.DeleteRangeResponse{Header: &pb.ResponseHeader{}}
	if d.PrevKv {
		for _, k := range w.m.keys() {
			if cur, ok := w.m.live(k); ok && inSpan(d.Key, d.RangeEnd, k) {
				resp.PrevKvs = append(resp.PrevKvs, cur.kv(k))
			}
		}
	}
	resp.Deleted = w.del(d.Key, d.RangeEnd)
	resp.Header.Revision = w.readRev()
	return resp
}

// txnDuplicate enumerates every path through the txn and fails if one
// writes a key twice.
func txnDuplicate(t *pb.TxnRequest) bool {
	type write struct {
		put      bool
		key, end []byte
	}
	var paths func(ops []*pb.RequestOp) [][]write
	paths = func(ops []*pb.RequestOp) [][]write {
		out := [][]write{nil}
		for _, op := range ops {
			var alts [][]write
			switch {
			case op.GetRequestPut() != nil:
				alts = [][]write{{{put: true, key: op.GetRequestPut().Key}}}
			case op.GetRequestDeleteRange() != nil:
				alts = [][]write{{{key: op.GetRequestDeleteRange().Key, end: op.GetRequestDeleteRange().RangeEnd}}}
			case op.GetRequestTxn() != nil:
				alts = append(paths(op.GetRequestTxn().Success), paths(op.GetRequestTxn().Failure)...)
			default:
				continue
			}
			var next [][]write
			for _, p := range out {
				for _, a := range alts {
					next = append(next, append(append([]write{}, p...), a...))
				}
			}
			out = next
		}
		return out
	}
	for _, ops := range [][]*pb.RequestOp{t.Success, t.Failure} {
		for _, p := range paths(ops) {
			for i, a := range p {
				if !a.put {
					continue
				}
				for j, b := range p {
					if i == j {
						continue
					}
					if (b.put && bytes.Equal(a.key, b.key)) || (!b.put && inSpan(b.key, b.end, string(a.key))) {
						return true
					}
				}
			}
		}
	}
	return false
}

func (m *model) compare(c *pb.Compare) bool {
	var matched []mRev
	for _, k := range m.keys() {
		if cur, ok := m.live(k); ok && inSpan(c.Key, c.RangeEnd, k) {
			matched = append(matched, cur)
		}
	}
	if len(matched) == 0 {
		if c.Target == pb.Compare_VALUE {
			return false
		}
		matched = []mRev{{}}
	}
	for _, r := range matched {
		var res int
		switch c.Target {
		case pb.Compare_VALUE:
			res = bytes.Compare(r.value, c.GetValue())
		case pb.Compare_VERSION:
			res = cmp.Compare(r.version, c.GetVersion())
		case pb.Compare_CREATE:
			res = cmp.Compare(r.create, c.GetCreateRevision())
		case pb.Compare_MOD:
			res = cmp.Compare(r.main, c.GetModRevision())
		case pb.Compare_LEASE:
			res = cmp.Compare(r.lease, c.GetLease())
		}
		ok := map[pb.Compare_CompareResult]bool{pb.Compare_EQUAL: res == 0, pb.Compare_NOT_EQUAL: res != 0, pb.Compare_GREATER: res > 0, pb.Compare_LESS: res < 0}[c.Result]
		if !ok {
			return false
		}
	}
	return true
}

// mTxnPlan is a txn with its compares evaluated up front, as etcd does.
type mTxnPlan struct {
	ok     bool
	nested map[*pb.TxnRequest]*mTxnPlan
}

func (m *model) plan(t *pb.TxnRequest) *mTxnPlan {
	p := &mTxnPlan{ok: true, nested: map[*pb.TxnRequest]*mTxnPlan{}}
	for _, c := range t.Compare {
		if !m.compare(c) {
			p.ok = false
			break
		}
	}
	for _, op := range branch(t, p.ok) {
		if n := op.GetRequestTxn(); n != nil {
			p.nested[n] = m.plan(n)
		}
	}
	return p
}

func (m *model) checkPlan(t *pb.TxnRequest, p *mTxnPlan) error {
	for _, op := range branch(t, p.ok) {
		switch {
		case op.GetRequestRange() != nil:
			rev := op.GetRequestRange().Revision
			if rev > m.rev {
				return rpctypes.ErrGRPCFutureRev
			}
			if rev > 0 && rev < m.compactRev {
				return rpctypes.ErrGRPCCompacted
			}
		case op.GetRequestPut() != nil:
			if err := m.checkPut(op.GetRequestPut()); err != nil {
				return err
			}
		case op.GetRequestTxn() != nil:
			if err := m.checkPlan(op.GetRequestTxn(), p.nested[op.GetRequestTxn()]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *mWrite) execTxn(t *pb.TxnRequest, p *mTxnPlan) *pb.TxnResponse {
	resp := &pb.TxnResponse{Header: &pb.ResponseHeader{}, Succeeded: p.ok}
	for _, op := range branch(t, p.ok) {
		ro := &pb.ResponseOp{}
		switch {
		case op.GetRequestRange() != nil:
			rr, err := w.m.rangeAt(op.GetRequestRange(), w.readRev())
			if err != nil {
				panic(err)
			}
			ro.Response = &pb.ResponseOp_ResponseRange{ResponseRange: rr}
		case op.GetRequestPut() != nil:
			ro.Response = &pb.ResponseOp_ResponsePut{ResponsePut: w.execPut(op.GetRequestPut())}
		case op.GetRequestDeleteRange() != nil:
			ro.Response = &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: w.execDelete(op.GetRequestDeleteRange())}
		case op.GetRequestTxn() != nil:
			ro.Response = &pb.ResponseOp_ResponseTxn{ResponseTxn: w.execTxn(op.GetRequestTxn(), p.nested[op.GetRequestTxn()])}
		}
		resp.Responses = append(resp.Responses, ro)
	}
	return resp
}

// apply is the model's Apply for the requests the generator makes.
func (m *model) apply(r *pb.InternalRaftRequest) ApplyResult {
	fail := func(err error) ApplyResult { return ApplyResult{Err: err, Rev: m.rev} }
	hdr := func() *pb.ResponseHeader { return &pb.ResponseHeader{Revision: m.rev} }
	switch {
	case r.Put != nil:
		if _, ok := m.leases[r.Put.Lease]; r.Put.Lease != 0 && !ok {
			return fail(rpctypes.ErrGRPCLeaseNotFound)
		}
		if err := m.checkPut(r.Put); err != nil {
			return fail(err)
		}
		w := &mWrite{m: m}
		resp := w.execPut(r.Put)
		return ApplyResult{Resp: resp, Events: w.end(), Rev: m.rev}
	case r.DeleteRange != nil:
		w := &mWrite{m: m}
		resp := w.execDelete(r.DeleteRange)
		return ApplyResult{Resp: resp, Events: w.end(), Rev: m.rev}
	case r.Txn != nil:
		if txnDuplicate(r.Txn) {
			return fail(rpctypes.ErrGRPCDuplicateKey)
		}
		p := m.plan(r.Txn)
		if err := m.checkPlan(r.Txn, p); err != nil {
			return fail(err)
		}
		w := &mWrite{m: m}
		resp := w.execTxn(r.Txn, p)
		events := w.end()
		resp.Header.Revision = m.rev
		return ApplyResult{Resp: resp, Events: events, Rev: m.rev}
	case r.Compaction != nil:
		at := r.Compaction.Revision
		if at <= m.compactRev {
			return fail(rpctypes.ErrGRPCCompacted)
		}
		if at > m.rev {
			return fail(rpctypes.ErrGRPCFutureRev)
		}
		for k, h := range m.hist {
			var kept []mRev
			newest := -1
			for i, r := range h {
				if r.main <= at {
					newest = i
				}
			}
			for i, r := range h {
				keep := r.main > at || (i == newest && (r.version != 0 || r.main == at))
				if keep {
					kept = append(kept, r)
				}
			}
			if len(kept) == 0 {
				delete(m.hist, k)
			} else {
				m.hist[k] = kept
			}
		}
		m.compactRev = at
		return ApplyResult{Resp: &pb.CompactionResponse{Header: hdr()}, Rev: m.rev}
	case r.LeaseGrant != nil:
		g := r.LeaseGrant
		if g.TTL > MaxLeaseTTLSeconds {
			return fail(rpctypes.ErrGRPCLeaseTTLTooLarge)
		}
		id := g.ID
		if id == 0 {
			id = m.nextLeaseID
			for _, taken := m.leases[id]; taken; _, taken = m.leases[id] {
				id++
			}
			m.nextLeaseID = id + 1
		} else if _, ok := m.leases[id]; ok {
			return fail(rpctypes.ErrGRPCLeaseExist)
		}
		ttl := max(g.TTL, m.cfg.MinLeaseTTLSeconds)
		m.leases[id] = ttl
		return ApplyResult{Resp: &pb.LeaseGrantResponse{Header: hdr(), ID: id, TTL: ttl}, Rev: m.rev}
	case r.LeaseRevoke != nil:
		id := r.LeaseRevoke.ID
		if _, ok := m.leases[id]; !ok {
			return fail(rpctypes.ErrGRPCLeaseNotFound)
		}
		w := &mWrite{m: m}
		for _, k := range m.keys() {
			if cur, ok := m.live(k); ok && cur.lease == id {
				w.del([]byte(k), nil)
			}
		}
		delete(m.leases, id)
		events := w.end()
		return ApplyResult{Resp: &pb.LeaseRevokeResponse{Header: hdr()}, Events: events, Rev: m.rev}
	}
	panic("model: unexpected request")
}

// stateHash is the store's StateHash definition computed from the model:
// FNV-1a 64 over the documented snapshot encoding.
func (m *model) stateHash() uint64 {
	var b []byte
	b = append(b, snapshotMagic...)
	b = binary.AppendUvarint(b, 1)
	b = binary.AppendUvarint(b, uint64(m.rev))
	b = binary.AppendUvarint(b, uint64(m.compactRev))
	b = binary.AppendUvarint(b, uint64(m.nextLeaseID))
	ks := m.keys()
	b = binary.AppendUvarint(b, uint64(len(ks)))
	for _, k := range ks {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(m.hist[k])))
		for _, r := range m.hist[k] {
			for _, v := range []int64{r.main, r.sub, r.create, r.version} {
				b = binary.AppendUvarint(b, uint64(v))
			}
			b = binary.AppendVarint(b, r.lease)
			if r.version > 0 {
				b = binary.AppendUvarint(b, uint64(len(r.value)))
				b = append(b, r.value...)
			}
		}
	}
	var ids []int64
	for id := range m.leases {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = binary.AppendVarint(b, id)
		b = binary.AppendVarint(b, m.leases[id])
	}
	b = binary.AppendUvarint(b, 0) // alarms
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

// hashKV is etcd's HashKV computed from the model.
func (m *model) hashKV(rev int64) uint32 {
	type item struct {
		k string
		r mRev
	}
	var items []item
	for _, k := range m.keys() {
		h := m.hist[k]
		newest := -1
		for i, r := range h {
			if r.main <= rev {
				newest = i
			}
		}
		for i, r := range h {
			if r.main > rev {
				continue
			}
			if r.main <= m.compactRev && (i != newest || r.version == 0) {
				continue
			}
			items = append(items, item{k, r})
		}
	}
	slices.SortFunc(items, func(a, b item) int {
		if a.r.main != b.r.main {
			return cmp.Compare(a.r.main, b.r.main)
		}
		return cmp.Compare(a.r.sub, b.r.sub)
	})
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	h.Write([]byte("key"))
	for _, it := range items {
		var key []byte
		key = binary.BigEndian.AppendUint64(key, uint64(it.r.main))
		key = append(key, '_')
		key = binary.BigEndian.AppendUint64(key, uint64(it.r.sub))
		kv := &mvccpb.KeyValue{Key: []byte(it.k)}
		if it.r.version == 0 {
			key = append(key, 't')
		} else {
			kv = it.r.kv(it.k)
		}
		val, err := proto.MarshalOptions{Deterministic: true}.Marshal(kv)
		if err != nil {
			panic(err)
		}
		h.Write(key)
		h.Write(val)
	}
	return h.Sum32()
}

// Generators. A small key space makes collisions, ranges and txn conflicts
// common.

var modelKeys = []string{"a", "ab", "abc", "b", "b\x00", "c", "\x00", "zz"}
var modelEnds = []string{"", "", "", "\x00", "b", "c", "ab\x00", "zz", "a"}

func genKey(t *rapid.T, label string) []byte {
	return []byte(rapid.SampledFrom(modelKeys).Draw(t, label))
}

func genEnd(t *rapid.T, label string) []byte {
	if e := rapid.SampledFrom(modelEnds).Draw(t, label); e != "" {
		return []byte(e)
	}
	return nil
}

func genValue(t *rapid.T) []byte {
	return []byte(rapid.SampledFrom([]string{"", "x", "y", "zz", "a long value"}).Draw(t, "value"))
}

func (m *model) genLease(t *rapid.T) int64 {
	ids := []int64{0, 0, 3}
	for id := range m.leases {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return rapid.SampledFrom(ids).Draw(t, "lease")
}

func (m *model) genRev(t *rapid.T, label string) int64 {
	return rapid.Int64Range(-1, m.rev+1).Draw(t, label)
}

func (m *model) genPut(t *rapid.T) *pb.PutRequest {
	p := &pb.PutRequest{Key: genKey(t, "key"), PrevKv: rapid.Bool().Draw(t, "prev_kv")}
	switch rapid.IntRange(0, 4).Draw(t, "put kind") {
	case 0:
		p.IgnoreValue = true
		p.Lease = m.genLease(t)
	case 1:
		p.IgnoreLease = true
		p.Value = genValue(t)
	default:
		p.Value = genValue(t)
		p.Lease = m.genLease(t)
	}
	return p
}

func (m *model) genDelete(t *rapid.T) *pb.DeleteRangeRequest {
	return &pb.DeleteRangeRequest{Key: genKey(t, "key"), RangeEnd: genEnd(t, "end"), PrevKv: rapid.Bool().Draw(t, "prev_kv")}
}

func (m *model) genRange(t *rapid.T) *pb.RangeRequest {
	r := &pb.RangeRequest{Key: genKey(t, "key"), RangeEnd: genEnd(t, "end")}
	if rapid.Bool().Draw(t, "options") {
		r.Limit = rapid.Int64Range(0, 3).Draw(t, "limit")
		r.Revision = m.genRev(t, "revision")
		r.SortOrder = pb.RangeRequest_SortOrder(rapid.IntRange(0, 2).Draw(t, "order"))
		r.SortTarget = pb.RangeRequest_SortTarget(rapid.IntRange(0, 4).Draw(t, "target"))
		r.KeysOnly = rapid.Bool().Draw(t, "keys_only")
		r.CountOnly = rapid.IntRange(0, 5).Draw(t, "count_only") == 0
		if rapid.Bool().Draw(t, "filters") {
			r.MinModRevision = m.genRev(t, "min_mod")
			r.MaxModRevision = m.genRev(t, "max_mod")
			r.MinCreateRevision = m.genRev(t, "min_create")
			r.MaxCreateRevision = m.genRev(t, "max_create")
		}
	}
	return r
}

func (m *model) genCompare(t *rapid.T) *pb.Compare {
	c := &pb.Compare{Key: genKey(t, "cmp key"), Result: pb.Compare_CompareResult(rapid.IntRange(0, 3).Draw(t, "result"))}
	if rapid.IntRange(0, 3).Draw(t, "cmp range") == 0 {
		c.RangeEnd = genEnd(t, "cmp end")
	}
	c.Target = pb.Compare_CompareTarget(rapid.IntRange(0, 4).Draw(t, "target"))
	n := rapid.Int64Range(0, m.rev+1).Draw(t, "cmp number")
	switch c.Target {
	case pb.Compare_VERSION:
		c.TargetUnion = &pb.Compare_Version{Version: n % 4}
	case pb.Compare_CREATE:
		c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: n}
	case pb.Compare_MOD:
		c.TargetUnion = &pb.Compare_ModRevision{ModRevision: n}
	case pb.Compare_VALUE:
		c.TargetUnion = &pb.Compare_Value{Value: genValue(t)}
	case pb.Compare_LEASE:
		c.TargetUnion = &pb.Compare_Lease{Lease: m.genLease(t)}
	}
	return c
}

func (m *model) genTxn(t *rapid.T, depth int) *pb.TxnRequest {
	tx := &pb.TxnRequest{}
	for range rapid.IntRange(0, 2).Draw(t, "compares") {
		tx.Compare = append(tx.Compare, m.genCompare(t))
	}
	ops := func() []*pb.RequestOp {
		var out []*pb.RequestOp
		for range rapid.IntRange(0, 3).Draw(t, "ops") {
			kinds := 3
			if depth < 2 {
				kinds = 4
			}
			switch rapid.IntRange(0, kinds-1).Draw(t, "op") {
			case 0:
				out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: m.genRange(t)}})
			case 1:
				out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: m.genPut(t)}})
			case 2:
				out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: m.genDelete(t)}})
			case 3:
				out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: m.genTxn(t, depth+1)}})
			}
		}
		return out
	}
	tx.Success = ops()
	tx.Failure = ops()
	return tx
}

// sameResult fails the test unless the store's and the model's results match.
func sameResult(t *rapid.T, what string, got, want ApplyResult) {
	if got.Err != want.Err {
		t.Fatalf("%s: err %v, model %v", what, got.Err, want.Err)
	}
	if got.Rev != want.Rev {
		t.Fatalf("%s: rev %d, model %d", what, got.Rev, want.Rev)
	}
	if (got.Resp == nil) != (want.Resp == nil) || (got.Resp != nil && !proto.Equal(got.Resp, want.Resp)) {
		t.Fatalf("%s:\n store %s\n model %s", what, Describe(got.Resp), Describe(want.Resp))
	}
	if len(got.Events) != len(want.Events) {
		t.Fatalf("%s: %d events, model %d: %s", what, len(got.Events), len(want.Events), got)
	}
	for i := range got.Events {
		if !proto.Equal(got.Events[i], want.Events[i]) {
			t.Fatalf("%s: event %d differs: %s", what, i, got)
		}
	}
}

// watchCheck follows one watcher on every key through the run and checks
// etcd's watch guarantees against the model's log of all events: ordered,
// unique, reliable (a gapless prefix of history from the start revision),
// atomic (a revision is never split across replies), prev_kv right, and a
// progress revision that no later event undercuts.
type watchCheck struct {
	stream StreamID
	key    []byte // nil: every key
	id     int64
	from   int64
	got    []*mvccpb.Event
	all    *[]*mvccpb.Event // every event the model produced, never compacted
}

func (wc *watchCheck) expected() []*mvccpb.Event {
	var out []*mvccpb.Event
	for _, ev := range *wc.all {
		if ev.Kv.ModRevision >= wc.from && (wc.key == nil || bytes.Equal(ev.Kv.Key, wc.key)) {
			out = append(out, ev)
		}
	}
	return out
}

// prevOf is the key's value just before ev, from the model's full log.
func (wc *watchCheck) prevOf(ev *mvccpb.Event) *mvccpb.KeyValue {
	var prev *mvccpb.Event
	for _, e := range *wc.all {
		if e.Kv.ModRevision >= ev.Kv.ModRevision {
			break
		}
		if bytes.Equal(e.Kv.Key, ev.Kv.Key) {
			prev = e
		}
	}
	if prev == nil || prev.Type == mvccpb.Event_DELETE {
		return nil
	}
	return prev.Kv
}

func (wc *watchCheck) create(t *rapid.T, s *Store, from int64) {
	req := &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: from, PrevKv: true}
	if wc.key != nil {
		req = &pb.WatchCreateRequest{Key: wc.key, StartRevision: from, PrevKv: true}
	}
	resp := s.WatchCreate(wc.stream, req)
	if !resp.Created || resp.Canceled {
		t.Fatalf("watch create from %d: %s", from, Describe(resp))
	}
	wc.id, wc.from, wc.got = resp.WatchId, from, nil
}

// pollWatches polls and hands each reply to its stream's checker.
func pollWatches(t *rapid.T, s *Store, m *model, budget int, checks []*watchCheck) {
	for _, r := range s.WatchPoll(budget) {
		found := false
		for _, wc := range checks {
			if wc.stream == r.Stream {
				wc.check(t, s, m, r.Resp)
				found = true
			}
		}
		if !found {
			t.Fatalf("reply for unknown stream %d", r.Stream)
		}
	}
}

func (wc *watchCheck) check(t *rapid.T, s *Store, m *model, resp *pb.WatchResponse) {
	{
		want := wc.expected()
		switch {
		case resp.WatchId == invalidWatchID:
			// Progress: every event at or below its revision arrived.
			for _, ev := range want[len(wc.got):] {
				if ev.Kv.ModRevision <= resp.Header.Revision {
					t.Fatalf("progress at %d but event at %d not delivered", resp.Header.Revision, ev.Kv.ModRevision)
				}
			}
		case resp.WatchId != wc.id:
			t.Fatalf("reply for watch %d, want %d: %s", resp.WatchId, wc.id, Describe(resp))
		case resp.Canceled:
			if resp.CompactRevision == 0 || resp.CompactRevision != m.compactRev {
				t.Fatalf("cancel without the compact revision: %s", Describe(resp))
			}
			// An all-keys watcher's next revision is right after the last
			// event it got: cancelling is right only if that was compacted.
			next := wc.from
			if n := len(wc.got); n > 0 {
				next = wc.got[n-1].Kv.ModRevision + 1
			}
			if wc.key == nil && next >= resp.CompactRevision {
				t.Fatalf("cancelled at compact revision %d though its next revision %d is kept", resp.CompactRevision, next)
			}
			wc.create(t, s, m.compactRev)
		default:
			for i, ev := range resp.Events {
				n := len(wc.got)
				if n >= len(want) || !proto.Equal(ev.Kv, want[n].Kv) || ev.Type != want[n].Type {
					t.Fatalf("watch event %d from %d is %s, want %v", n, wc.from, Describe(resp), want[n:])
				}
				if i == 0 && n > 0 && want[n-1].Kv.ModRevision == ev.Kv.ModRevision {
					t.Fatalf("revision %d split across replies", ev.Kv.ModRevision)
				}
				if i == len(resp.Events)-1 && n+1 < len(want) && want[n+1].Kv.ModRevision == ev.Kv.ModRevision {
					t.Fatalf("revision %d split across replies", ev.Kv.ModRevision)
				}
				prev := wc.prevOf(ev)
				isCreate := ev.Type == mvccpb.Event_PUT && ev.Kv.Version == 1
				switch {
				case ev.PrevKv != nil && !proto.Equal(ev.PrevKv, prev):
					t.Fatalf("prev_kv of %s is %v, want %v", Describe(resp), ev.PrevKv, prev)
				case ev.PrevKv == nil && prev != nil && !isCreate && ev.Kv.ModRevision-1 >= m.compactRev:
					t.Fatalf("prev_kv missing in %s", Describe(resp))
				}
				wc.got = append(wc.got, ev)
			}
		}
	}
}

// scribble overwrites the keys and values of r's puts, as a caller reusing
// its buffers after Apply would.
func scribble(r *pb.InternalRaftRequest) {
	var ops func(ops []*pb.RequestOp)
	put := func(p *pb.PutRequest) {
		for _, b := range [][]byte{p.GetKey(), p.GetValue()} {
			for i := range b {
				b[i] = 0xfe
			}
		}
	}
	ops = func(list []*pb.RequestOp) {
		for _, op := range list {
			if p := op.GetRequestPut(); p != nil {
				put(p)
			}
			if t := op.GetRequestTxn(); t != nil {
				ops(t.GetSuccess())
				ops(t.GetFailure())
			}
		}
	}
	if p := r.GetPut(); p != nil {
		put(p)
	}
	if t := r.GetTxn(); t != nil {
		ops(t.GetSuccess())
		ops(t.GetFailure())
	}
}

func TestModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg := Config{MinLeaseTTLSeconds: rapid.Int64Range(0, 3).Draw(t, "min ttl")}
		s := New(cfg)
		m := newModel(cfg)
		var allEvents []*mvccpb.Event
		watches := []*watchCheck{{stream: 9, all: &allEvents}, {stream: 10, key: []byte("a"), all: &allEvents}}
		for _, wc := range watches {
			wc.create(t, s, 1)
		}
		apply := func(r *pb.InternalRaftRequest) {
			what := Describe(r)
			if err := Validate(cfg, r); err != nil && err != rpctypes.ErrGRPCDuplicateKey {
				t.Fatalf("generator made an invalid request %s: %v", what, err)
			}
			want := m.apply(proto.Clone(r).(*pb.InternalRaftRequest))
			if rapid.Bool().Draw(t, "owned") {
				sameResult(t, what, s.ApplyOwned(r), want)
			} else {
				// Apply copies what it keeps: the caller may reuse the
				// request's buffers.
				sameResult(t, what, s.Apply(r), want)
				scribble(r)
			}
			allEvents = append(allEvents, want.Events...)
		}
		t.Repeat(map[string]func(*rapid.T){
			"put": func(t *rapid.T) {
				apply(&pb.InternalRaftRequest{Put: m.genPut(t)})
			},
			"delete": func(t *rapid.T) {
				apply(&pb.InternalRaftRequest{DeleteRange: m.genDelete(t)})
			},
			"txn": func(t *rapid.T) {
				apply(&pb.InternalRaftRequest{Txn: m.genTxn(t, 0)})
			},
			"compact": func(t *rapid.T) {
				apply(&pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: rapid.Int64Range(0, m.rev+1).Draw(t, "revision")}})
			},
			"grant": func(t *rapid.T) {
				id := rapid.SampledFrom([]int64{0, 0, 1, 2, 3, -4}).Draw(t, "id")
				apply(&pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: id, TTL: rapid.Int64Range(-1, 10).Draw(t, "ttl")}})
			},
			"revoke": func(t *rapid.T) {
				apply(&pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: m.genLease(t)}})
			},
			"range": func(t *rapid.T) {
				r := m.genRange(t)
				got, gotErr := s.Range(r)
				want, wantErr := m.rangeAt(r, m.rev)
				if gotErr != wantErr || (gotErr == nil && !proto.Equal(got, want)) {
					t.Fatalf("%s:\n store %s %v\n model %s %v", Describe(r), Describe(got), gotErr, Describe(want), wantErr)
				}
			},
			"read txn": func(t *rapid.T) {
				tx := m.genTxn(t, 0)
				got, err := s.ReadTxn(tx)
				if err == ErrTxnWrites || err == rpctypes.ErrGRPCDuplicateKey {
					return
				}
				before := m.rev
				want := m.apply(&pb.InternalRaftRequest{Txn: tx})
				if want.Rev != before {
					t.Fatalf("ReadTxn ran a txn that writes: %s", Describe(tx))
				}
				if err != want.Err || (err == nil && !proto.Equal(got, want.Resp)) {
					t.Fatalf("read txn %s:\n store %s %v\n model %s %v", Describe(tx), Describe(got), err, Describe(want.Resp), want.Err)
				}
			},
			"snapshot": func(t *rapid.T) {
				data := s.Snapshot()
				// The one-buffer encoding (node's snapshots) is the same
				// bytes, counted exactly.
				prefix := []byte("prefix")
				if got := s.AppendSnapshot(slices.Clone(prefix)); !bytes.Equal(got, append(prefix, data...)) {
					t.Fatalf("AppendSnapshot differs from Snapshot")
				}
				if n := s.SnapshotSizeBytes(); n != len(data) {
					t.Fatalf("SnapshotSizeBytes %d, Snapshot is %d bytes", n, len(data))
				}
				r, err := Restore(cfg, data)
				if err != nil {
					t.Fatalf("restore: %v", err)
				}
				if r.StateHash() != s.StateHash() {
					t.Fatalf("restored state differs")
				}
				// Install it in place, as a follower does, so the watcher
				// lives on (and catches up through the new history).
				if err := s.Replace(data); err != nil {
					t.Fatalf("replace: %v", err)
				}
			},
			"watch poll": func(t *rapid.T) {
				pollWatches(t, s, m, rapid.IntRange(0, 8).Draw(t, "budget"), watches)
			},
			"watch pause": func(t *rapid.T) {
				wc := rapid.SampledFrom(watches).Draw(t, "watch")
				s.WatchPause(wc.stream, wc.id)
			},
			"watch progress": func(t *rapid.T) {
				s.WatchRequestProgress(rapid.SampledFrom(watches).Draw(t, "watch").stream)
			},
			"hashkv": func(t *rapid.T) {
				rev := rapid.Int64Range(m.compactRev, m.rev).Draw(t, "hash rev")
				got, hashRev, compactRev, err := s.HashKV(rev)
				if err != nil || hashRev != max(rev, 1) && rev != 0 || compactRev != m.compactRev {
					t.Fatalf("HashKV(%d): %d %d %v", rev, hashRev, compactRev, err)
				}
				if rev == 0 {
					rev = m.rev
				}
				if want := m.hashKV(rev); got != want {
					t.Fatalf("HashKV(%d) = %08x, model %08x", rev, got, want)
				}
			},
			"": func(t *rapid.T) {
				if err := s.checkInvariants(); err != nil {
					t.Fatalf("invariants: %v", err)
				}
				if s.Rev() != m.rev || s.CompactRev() != m.compactRev {
					t.Fatalf("rev %d/%d, model %d/%d", s.Rev(), s.CompactRev(), m.rev, m.compactRev)
				}
				if got, want := s.StateHash(), m.stateHash(); got != want {
					t.Fatalf("state hash %016x, model %016x", got, want)
				}
			},
		})
		// Liveness: with budget to spare the watcher catches up, gets
		// everything from its start revision, and a progress reply.
		for range 20 {
			pollWatches(t, s, m, 1000, watches)
		}
		for _, wc := range watches {
			if got, want := len(wc.got), len(wc.expected()); got != want {
				t.Fatalf("watcher of %q from %d got %d of %d events", wc.key, wc.from, got, want)
			}
			s.WatchRequestProgress(wc.stream)
			if resps := s.WatchPoll(1000); len(resps) != 1 || resps[0].Resp.WatchId != invalidWatchID || resps[0].Resp.Header.Revision != m.rev {
				t.Fatalf("no progress reply at %d once synced", m.rev)
			}
		}
	})
}

package linearizability

import (
	"fmt"
	"strconv"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// The checkers work on their own copy of each request, converted once from
// the protobuf: keys as strings (cheap to compare and hash), ranges resolved
// to one of three shapes, txn flags precomputed. The model's step runs
// hundreds of thousands of times; it must not decode protobufs.

type requestKind uint8

const (
	kindNone requestKind = iota // an empty RequestOp inside a txn, or an entry without KV effect
	kindRange
	kindPut
	kindDeleteRange
	kindTxn
	kindCompact
	kindLeaseGrant
	kindLeaseRevoke
)

func (k requestKind) String() string {
	switch k {
	case kindRange:
		return "range"
	case kindPut:
		return "put"
	case kindDeleteRange:
		return "delete"
	case kindTxn:
		return "txn"
	case kindCompact:
		return "compact"
	case kindLeaseGrant:
		return "lease-grant"
	case kindLeaseRevoke:
		return "lease-revoke"
	}
	return "none"
}

type rangeShape uint8

const (
	shapeKey      rangeShape = iota // range_end empty: the one key
	shapeFromKey                    // range_end "\x00": every key >= key
	shapeInterval                   // [key, range_end)
)

// keyRange is a resolved key, range_end pair.
type keyRange struct {
	start string
	end   string // only for shapeInterval
	shape rangeShape
}

func newKeyRange(key, end []byte) keyRange {
	switch {
	case len(end) == 0:
		return keyRange{start: string(key), shape: shapeKey}
	case len(end) == 1 && end[0] == 0:
		return keyRange{start: string(key), shape: shapeFromKey}
	}
	return keyRange{start: string(key), end: string(end), shape: shapeInterval}
}

func (r keyRange) contains(key string) bool {
	switch r.shape {
	case shapeKey:
		return key == r.start
	case shapeFromKey:
		return key >= r.start
	}
	return key >= r.start && key < r.end
}

// beyond reports whether key sorts after every key of the range, so a scan
// in key order can stop.
func (r keyRange) beyond(key string) bool {
	switch r.shape {
	case shapeKey:
		return key > r.start
	case shapeFromKey:
		return false
	}
	return key >= r.end
}

func (r keyRange) String() string {
	switch r.shape {
	case shapeKey:
		return quote(r.start)
	case shapeFromKey:
		return quote(r.start) + ".."
	}
	return quote(r.start) + ".." + quote(r.end)
}

type rangeOp struct {
	keys                 keyRange
	limit                int64
	revision             int64
	sortOrder            pb.RangeRequest_SortOrder
	sortTarget           pb.RangeRequest_SortTarget
	serializable         bool
	keysOnly, countOnly  bool
	minMod, maxMod       int64
	minCreate, maxCreate int64
	emptyKey             bool // validation: key not provided
}

type putOp struct {
	key                      string
	value                    string
	lease                    int64
	prevKV                   bool
	ignoreValue, ignoreLease bool
}

type deleteOp struct {
	keys   keyRange
	prevKV bool
}

type compareOp struct {
	keys   keyRange
	target pb.Compare_CompareTarget
	result pb.Compare_CompareResult
	value  string // for VALUE
	number int64  // for VERSION, CREATE, MOD, LEASE
}

type txnOp struct {
	compares []compareOp
	success  []*request
	failure  []*request
	readOnly bool // no put or delete in any branch, at any depth (etcd's IsTxnReadonly)
	// serializable is etcd's isTxnSerializable: read-only and every range
	// serializable, so a member answers it locally, possibly stale.
	serializable bool
}

// request is one operation in the checkers' form. Exactly the field for kind
// is set (compact, lease fields are inline).
type request struct {
	kind        requestKind
	rng         *rangeOp
	put         *putOp
	del         *deleteOp
	txn         *txnOp
	compactRev  int64
	leaseID     int64
	leaseTTL    int64
	description string // built once; the failures and the visualization show it
}

// isWrite reports whether the request goes through raft and may change
// state: everything but ranges and read-only txns.
func (r *request) isWrite() bool {
	switch r.kind {
	case kindRange, kindNone:
		return false
	case kindTxn:
		return !r.txn.readOnly
	}
	return true
}

// isSerializable reports whether a member may answer the request from its
// own, possibly stale, state.
func (r *request) isSerializable() bool {
	switch r.kind {
	case kindRange:
		return r.rng.serializable
	case kindTxn:
		return r.txn.serializable
	}
	return false
}

func (r *request) String() string { return r.description }

// convertRequest turns the client's request into the checkers' form. It fails
// when not exactly one field is set.
func convertRequest(q Request) (*request, error) {
	var set []*request
	if q.Range != nil {
		set = append(set, convertRange(q.Range))
	}
	if q.Put != nil {
		set = append(set, convertPut(q.Put))
	}
	if q.DeleteRange != nil {
		set = append(set, convertDelete(q.DeleteRange))
	}
	if q.Txn != nil {
		set = append(set, convertTxn(q.Txn))
	}
	if q.Compact != nil {
		set = append(set, convertCompact(q.Compact))
	}
	if q.LeaseGrant != nil {
		set = append(set, convertLeaseGrant(q.LeaseGrant))
	}
	if q.LeaseRevoke != nil {
		set = append(set, convertLeaseRevoke(q.LeaseRevoke))
	}
	if len(set) != 1 {
		return nil, fmt.Errorf("request has %d fields set, want exactly 1", len(set))
	}
	return set[0], nil
}

// convertInternal turns a committed entry's request into the checkers' form.
// Entries without a KV effect (alarms, auth, lease checkpoints, cluster
// version) become kindNone.
func convertInternal(q *pb.InternalRaftRequest) *request {
	switch {
	case q == nil:
	case q.GetRange() != nil:
		return convertRange(q.GetRange())
	case q.GetPut() != nil:
		return convertPut(q.GetPut())
	case q.GetDeleteRange() != nil:
		return convertDelete(q.GetDeleteRange())
	case q.GetTxn() != nil:
		return convertTxn(q.GetTxn())
	case q.GetCompaction() != nil:
		return convertCompact(q.GetCompaction())
	case q.GetLeaseGrant() != nil:
		return convertLeaseGrant(q.GetLeaseGrant())
	case q.GetLeaseRevoke() != nil:
		return convertLeaseRevoke(q.GetLeaseRevoke())
	}
	return &request{kind: kindNone, description: "no-kv-effect"}
}

func convertRange(q *pb.RangeRequest) *request {
	r := &rangeOp{
		keys:         newKeyRange(q.GetKey(), q.GetRangeEnd()),
		limit:        q.GetLimit(),
		revision:     q.GetRevision(),
		sortOrder:    q.GetSortOrder(),
		sortTarget:   q.GetSortTarget(),
		serializable: q.GetSerializable(),
		keysOnly:     q.GetKeysOnly(),
		countOnly:    q.GetCountOnly(),
		minMod:       q.GetMinModRevision(),
		maxMod:       q.GetMaxModRevision(),
		minCreate:    q.GetMinCreateRevision(),
		maxCreate:    q.GetMaxCreateRevision(),
		emptyKey:     len(q.GetKey()) == 0,
	}
	req := &request{kind: kindRange, rng: r}
	req.description = describeRange(r)
	return req
}

func convertPut(q *pb.PutRequest) *request {
	p := &putOp{
		key:         string(q.GetKey()),
		value:       string(q.GetValue()),
		lease:       q.GetLease(),
		prevKV:      q.GetPrevKv(),
		ignoreValue: q.GetIgnoreValue(),
		ignoreLease: q.GetIgnoreLease(),
	}
	req := &request{kind: kindPut, put: p}
	req.description = describePut(p)
	return req
}

func convertDelete(q *pb.DeleteRangeRequest) *request {
	d := &deleteOp{keys: newKeyRange(q.GetKey(), q.GetRangeEnd()), prevKV: q.GetPrevKv()}
	req := &request{kind: kindDeleteRange, del: d}
	req.description = describeDelete(d)
	return req
}

func convertCompact(q *pb.CompactionRequest) *request {
	return &request{kind: kindCompact, compactRev: q.GetRevision(),
		description: fmt.Sprintf("compact(%d)", q.GetRevision())}
}

func convertLeaseGrant(q *pb.LeaseGrantRequest) *request {
	r := &request{kind: kindLeaseGrant, leaseID: q.GetID(), leaseTTL: q.GetTTL()}
	r.description = fmt.Sprintf("lease-grant(id=%d, ttl=%ds)", r.leaseID, r.leaseTTL)
	return r
}

func convertLeaseRevoke(q *pb.LeaseRevokeRequest) *request {
	return &request{kind: kindLeaseRevoke, leaseID: q.GetID(),
		description: fmt.Sprintf("lease-revoke(%d)", q.GetID())}
}

func convertTxn(q *pb.TxnRequest) *request {
	t := &txnOp{readOnly: true, serializable: true}
	for _, c := range q.GetCompare() {
		co := compareOp{
			keys:   newKeyRange(c.GetKey(), c.GetRangeEnd()),
			target: c.GetTarget(),
			result: c.GetResult(),
		}
		switch c.GetTarget() {
		case pb.Compare_VALUE:
			co.value = string(c.GetValue())
		case pb.Compare_VERSION:
			co.number = c.GetVersion()
		case pb.Compare_CREATE:
			co.number = c.GetCreateRevision()
		case pb.Compare_MOD:
			co.number = c.GetModRevision()
		case pb.Compare_LEASE:
			co.number = c.GetLease()
		}
		t.compares = append(t.compares, co)
	}
	convertOps := func(ops []*pb.RequestOp) []*request {
		out := make([]*request, 0, len(ops))
		for _, op := range ops {
			var r *request
			switch {
			case op.GetRequestRange() != nil:
				r = convertRange(op.GetRequestRange())
				t.serializable = t.serializable && r.rng.serializable
			case op.GetRequestPut() != nil:
				r = convertPut(op.GetRequestPut())
				t.readOnly = false
			case op.GetRequestDeleteRange() != nil:
				r = convertDelete(op.GetRequestDeleteRange())
				t.readOnly = false
			case op.GetRequestTxn() != nil:
				r = convertTxn(op.GetRequestTxn())
				t.readOnly = t.readOnly && r.txn.readOnly
				t.serializable = t.serializable && r.txn.serializable
			default:
				r = &request{kind: kindNone, description: "empty-op"}
			}
			out = append(out, r)
		}
		return out
	}
	t.success = convertOps(q.GetSuccess())
	t.failure = convertOps(q.GetFailure())
	t.serializable = t.serializable && t.readOnly
	req := &request{kind: kindTxn, txn: t}
	req.description = describeTxn(t)
	return req
}

// quote shows a key or value: Go-quoted, cut after 32 bytes.
func quote(s string) string {
	const maxShown = 32
	if len(s) > maxShown {
		return strconv.Quote(s[:maxShown]) + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return strconv.Quote(s)
}

func describeRange(r *rangeOp) string {
	var opts []string
	if r.revision != 0 {
		opts = append(opts, fmt.Sprintf("rev=%d", r.revision))
	}
	if r.limit != 0 {
		opts = append(opts, fmt.Sprintf("limit=%d", r.limit))
	}
	if r.sortOrder != pb.RangeRequest_NONE || r.sortTarget != pb.RangeRequest_KEY {
		opts = append(opts, fmt.Sprintf("sort=%s/%s", r.sortTarget, r.sortOrder))
	}
	if r.serializable {
		opts = append(opts, "serializable")
	}
	if r.keysOnly {
		opts = append(opts, "keys_only")
	}
	if r.countOnly {
		opts = append(opts, "count_only")
	}
	if r.minMod != 0 {
		opts = append(opts, fmt.Sprintf("min_mod=%d", r.minMod))
	}
	if r.maxMod != 0 {
		opts = append(opts, fmt.Sprintf("max_mod=%d", r.maxMod))
	}
	if r.minCreate != 0 {
		opts = append(opts, fmt.Sprintf("min_create=%d", r.minCreate))
	}
	if r.maxCreate != 0 {
		opts = append(opts, fmt.Sprintf("max_create=%d", r.maxCreate))
	}
	return "range(" + strings.Join(append([]string{r.keys.String()}, opts...), ", ") + ")"
}

func describePut(p *putOp) string {
	parts := []string{quote(p.key), quote(p.value)}
	if p.lease != 0 {
		parts = append(parts, fmt.Sprintf("lease=%d", p.lease))
	}
	if p.prevKV {
		parts = append(parts, "prev_kv")
	}
	if p.ignoreValue {
		parts = append(parts, "ignore_value")
	}
	if p.ignoreLease {
		parts = append(parts, "ignore_lease")
	}
	return "put(" + strings.Join(parts, ", ") + ")"
}

func describeDelete(d *deleteOp) string {
	if d.prevKV {
		return "delete(" + d.keys.String() + ", prev_kv)"
	}
	return "delete(" + d.keys.String() + ")"
}

func describeCompare(c compareOp) string {
	var target, operand string
	switch c.target {
	case pb.Compare_VALUE:
		target, operand = "value", quote(c.value)
	case pb.Compare_VERSION:
		target, operand = "version", strconv.FormatInt(c.number, 10)
	case pb.Compare_CREATE:
		target, operand = "create", strconv.FormatInt(c.number, 10)
	case pb.Compare_MOD:
		target, operand = "mod", strconv.FormatInt(c.number, 10)
	case pb.Compare_LEASE:
		target, operand = "lease", strconv.FormatInt(c.number, 10)
	default:
		target, operand = c.target.String(), strconv.FormatInt(c.number, 10)
	}
	var op string
	switch c.result {
	case pb.Compare_EQUAL:
		op = "=="
	case pb.Compare_NOT_EQUAL:
		op = "!="
	case pb.Compare_GREATER:
		op = ">"
	case pb.Compare_LESS:
		op = "<"
	default:
		op = c.result.String()
	}
	return fmt.Sprintf("%s(%s) %s %s", target, c.keys, op, operand)
}

func describeTxn(t *txnOp) string {
	var b strings.Builder
	b.WriteString("txn(if [")
	for i, c := range t.compares {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(describeCompare(c))
	}
	b.WriteString("] then [")
	for i, r := range t.success {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.description)
	}
	b.WriteString("] else [")
	for i, r := range t.failure {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.description)
	}
	b.WriteString("])")
	return b.String()
}

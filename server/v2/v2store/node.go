package v2store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Prefix is where the v2 tree lives in the v3 keyspace. It starts with a
// zero byte so that it sorts before every printable key: a v3 client's
// range over its own prefixes never meets v2 state.
const Prefix = "\x00v2"

// journalKey is put by every v2 write with the event it makes.
var journalKey = []byte(Prefix)

// dataKey is the v3 key of node p (a clean path starting with "/").
func dataKey(p string) []byte { return []byte(Prefix + p) }

// subtree is the v3 range of every node below p.
func subtree(p string) (key, end []byte) {
	if p == "/" {
		return []byte(Prefix + "/"), []byte(Prefix + "0")
	}
	return []byte(Prefix + p + "/"), []byte(Prefix + p + "0")
}

// nodePath is the v2 path of a v3 key under Prefix, or "" for another key
// (the journal, or a key a v3 client wrote).
func nodePath(key []byte) string {
	if len(key) <= len(Prefix) || string(key[:len(Prefix)]) != Prefix || key[len(Prefix)] != '/' {
		return ""
	}
	return string(key[len(Prefix):])
}

// CleanPath is etcd's v2 path normalization: rooted, no trailing slash,
// no "." or ".." or repeated slashes.
func CleanPath(p string) string { return path.Clean(path.Join("/", p)) }

// ancestors lists the directories above p, top first, root excluded.
func ancestors(p string) []string {
	var out []string
	for i := 1; i < len(p); i++ {
		if p[i] == '/' {
			out = append(out, p[:i])
		}
	}
	return out
}

// isHidden reports whether the node name (last element) starts with "_":
// listings leave such nodes out.
func isHidden(p string) bool {
	_, name := path.Split(p)
	return strings.HasPrefix(name, "_")
}

// hiddenBelow reports whether key, below watched, has a hidden element
// after watched (v2 does not tell a recursive watcher about those).
func hiddenBelow(watched, key string) bool {
	rest := strings.TrimPrefix(key, watched)
	for _, el := range strings.Split(rest, "/") {
		if strings.HasPrefix(el, "_") {
			return true
		}
	}
	return false
}

// record is the value of a node's v3 key.
type record struct {
	dir bool
	// created is the v2 created index: a v2 set replaces a file (a new
	// created index) where v3 keeps the key's create revision, so it is
	// kept here. 0: the version's own mod revision (a set or create).
	created uint64
	// modified is the v2 modified index when it is not the v3 mod
	// revision: a directory's update moves the nodes below it to its new
	// lease, a v3 write that v2 does not count as a modification. 0: the
	// version's own mod revision.
	modified uint64
	// expireUnixNs is when the node expires (0: never). The lease decides
	// when it goes; this is what v2 reports.
	expireUnixNs int64
	value        string
}

const (
	recordFile byte = 'f'
	recordDir  byte = 'd'
)

var errBadRecord = errors.New("v2store: malformed node record")

func (r record) encode() []byte {
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(r.value))
	if r.dir {
		b = append(b, recordDir)
	} else {
		b = append(b, recordFile)
	}
	b = binary.AppendUvarint(b, r.created)
	b = binary.AppendUvarint(b, r.modified)
	b = binary.AppendVarint(b, r.expireUnixNs)
	return append(b, r.value...)
}

func decodeRecord(b []byte) (record, error) {
	var r record
	if len(b) == 0 || (b[0] != recordFile && b[0] != recordDir) {
		return r, errBadRecord
	}
	r.dir = b[0] == recordDir
	b = b[1:]
	c, n := binary.Uvarint(b)
	if n <= 0 {
		return r, errBadRecord
	}
	r.created, b = c, b[n:]
	md, n := binary.Uvarint(b)
	if n <= 0 {
		return r, errBadRecord
	}
	r.modified, b = md, b[n:]
	e, n := binary.Varint(b)
	if n <= 0 {
		return r, errBadRecord
	}
	r.expireUnixNs, r.value = e, string(b[n:])
	return r, nil
}

// entry is one node as read: its path, record and v3 metadata.
type entry struct {
	path string
	rec  record
	kv   *mvccpb.KeyValue
}

func entryOf(kv *mvccpb.KeyValue) (entry, bool) {
	p := nodePath(kv.GetKey())
	if p == "" {
		return entry{}, false
	}
	rec, err := decodeRecord(kv.GetValue())
	if err != nil {
		return entry{}, false
	}
	return entry{path: p, rec: rec, kv: kv}, true
}

func (e entry) modifiedIndex() uint64 {
	if e.rec.modified == 0 {
		return uint64(e.kv.GetModRevision())
	}
	return e.rec.modified
}

func (e entry) createdIndex() uint64 {
	if e.rec.created == 0 {
		return uint64(e.kv.GetModRevision())
	}
	return e.rec.created
}

// Node is a v2 node as etcd's JSON shows it (field order is etcd's).
type Node struct {
	Key           string     `json:"key,omitempty"`
	Value         *string    `json:"value,omitempty"`
	Dir           bool       `json:"dir,omitempty"`
	Expiration    *time.Time `json:"expiration,omitempty"`
	TTL           int64      `json:"ttl,omitempty"`
	Nodes         []*Node    `json:"nodes,omitempty"`
	ModifiedIndex uint64     `json:"modifiedIndex,omitempty"`
	CreatedIndex  uint64     `json:"createdIndex,omitempty"`
}

// node renders an entry without children.
func (e entry) node(now time.Time) *Node {
	n := &Node{Key: e.path, Dir: e.rec.dir, ModifiedIndex: e.modifiedIndex(), CreatedIndex: e.createdIndex()}
	if !e.rec.dir {
		v := e.rec.value
		n.Value = &v
	}
	n.Expiration, n.TTL = expirationAndTTL(e.rec.expireUnixNs, now)
	return n
}

// expirationAndTTL is etcd's: the expiry in UTC and the seconds left,
// rounded up.
func expirationAndTTL(expireUnixNs int64, now time.Time) (*time.Time, int64) {
	if expireUnixNs == 0 {
		return nil, 0
	}
	exp := time.Unix(0, expireUnixNs).UTC()
	left := exp.Sub(now)
	ttl := left / time.Second
	if left%time.Second > 0 {
		ttl++
	}
	return &exp, int64(ttl)
}

// Event is a v2 response to a successful request: etcd's JSON body.
type Event struct {
	Action   string `json:"action"`
	Node     *Node  `json:"node,omitempty"`
	PrevNode *Node  `json:"prevNode,omitempty"`
}

// The v2 actions.
const (
	ActionGet              = "get"
	ActionCreate           = "create"
	ActionSet              = "set"
	ActionUpdate           = "update"
	ActionDelete           = "delete"
	ActionCompareAndSwap   = "compareAndSwap"
	ActionCompareAndDelete = "compareAndDelete"
	ActionExpire           = "expire"
)

// IsCreated reports whether the event made a new node (HTTP 201).
func (e *Event) IsCreated() bool {
	return e.Action == ActionCreate || (e.Action == ActionSet && e.PrevNode == nil)
}

// Error is etcd's v2 error body.
type Error struct {
	Code    int    `json:"errorCode"`
	Message string `json:"message"`
	Cause   string `json:"cause,omitempty"`
	Index   uint64 `json:"index"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%s) [%d]", e.Message, e.Cause, e.Index) }

// etcd's v2 error codes.
const (
	EcodeKeyNotFound   = 100
	EcodeTestFailed    = 101
	EcodeNotFile       = 102
	EcodeNotDir        = 104
	EcodeNodeExist     = 105
	EcodeRootROnly     = 107
	EcodeDirNotEmpty   = 108
	EcodeUnauthorized  = 110
	EcodePrevValueReq  = 201
	EcodeTTLNaN        = 202
	EcodeIndexNaN      = 203
	EcodeInvalidField  = 209
	EcodeInvalidForm   = 210
	EcodeRefreshValue  = 211
	EcodeRefreshTTLReq = 212
	EcodeRaftInternal  = 300
	EcodeLeaderElect   = 301
	EcodeIndexCleared  = 401
)

var errorMessages = map[int]string{
	EcodeKeyNotFound:   "Key not found",
	EcodeTestFailed:    "Compare failed",
	EcodeNotFile:       "Not a file",
	EcodeNotDir:        "Not a directory",
	EcodeNodeExist:     "Key already exists",
	EcodeRootROnly:     "Root is read only",
	EcodeDirNotEmpty:   "Directory not empty",
	EcodeUnauthorized:  "The request requires user authentication",
	EcodePrevValueReq:  "PrevValue is Required in POST form",
	EcodeTTLNaN:        "The given TTL in POST form is not a number",
	EcodeIndexNaN:      "The given index in POST form is not a number",
	EcodeInvalidField:  "Invalid field",
	EcodeInvalidForm:   "Invalid POST form",
	EcodeRefreshValue:  "Value provided on refresh",
	EcodeRefreshTTLReq: "A TTL must be provided on refresh",
	EcodeRaftInternal:  "Raft Internal Error",
	EcodeLeaderElect:   "During Leader Election",
	EcodeIndexCleared:  "The event in requested index is outdated and cleared",
}

// NewError is etcd's v2error.NewError.
func NewError(code int, cause string, index uint64) *Error {
	return &Error{Code: code, Message: errorMessages[code], Cause: cause, Index: index}
}

// StatusCode is the HTTP status etcd answers the error with.
func (e *Error) StatusCode() int {
	switch e.Code {
	case EcodeKeyNotFound:
		return 404
	case EcodeNotFile, EcodeDirNotEmpty:
		return 403
	case EcodeUnauthorized:
		return 401
	case EcodeTestFailed, EcodeNodeExist:
		return 412
	case EcodeRaftInternal, EcodeLeaderElect:
		return 500
	}
	return 400
}

package v2store

import (
	"fmt"
	"net/url"
	"strconv"
)

// Request is one parsed /v2/keys request.
type Request struct {
	Method string // GET, PUT, POST or DELETE
	Path   string // clean, rooted

	Value     string
	Dir       bool
	PrevExist *bool
	PrevValue string
	PrevIndex uint64
	// TTL is the node's time to live in seconds; nil: none (the node is
	// permanent, and a TTL it had is removed).
	TTL     *uint64
	Refresh bool

	Recursive bool
	Sorted    bool
	Quorum    bool

	Wait      bool
	WaitIndex uint64
	Stream    bool

	NoValueOnSuccess bool
}

// The HTTP methods the keys API serves.
const (
	MethodGet    = "GET"
	MethodPut    = "PUT"
	MethodPost   = "POST"
	MethodDelete = "DELETE"
)

// ParseRequest reads a keys request as etcd 3.4's v2 HTTP handler does:
// keyPath is the URL path after /v2/keys, form the query and body
// parameters. A bad parameter is etcd's request error (index 0).
func ParseRequest(method, keyPath string, form url.Values) (*Request, *Error) {
	r := &Request{Method: method, Path: CleanPath(keyPath), Value: form.Get("value")}
	var err *Error
	getBool := func(name string) bool {
		if err != nil {
			return false
		}
		vs, ok := form[name]
		if !ok || len(vs) == 0 {
			return false
		}
		b, perr := strconv.ParseBool(vs[0])
		if perr != nil {
			err = requestError(EcodeInvalidField, fmt.Sprintf("invalid value for %q", name))
		}
		return b
	}
	getUint := func(name string) uint64 {
		if err != nil {
			return 0
		}
		vs, ok := form[name]
		if !ok || len(vs) == 0 {
			return 0
		}
		n, perr := strconv.ParseUint(vs[0], 10, 64)
		if perr != nil {
			err = requestError(EcodeIndexNaN, fmt.Sprintf("invalid value for %q", name))
		}
		return n
	}
	r.PrevIndex = getUint("prevIndex")
	r.WaitIndex = getUint("waitIndex")
	r.Recursive = getBool("recursive")
	r.Sorted = getBool("sorted")
	r.Wait = getBool("wait")
	r.Dir = getBool("dir")
	r.Quorum = getBool("quorum")
	r.Stream = getBool("stream")
	if err != nil {
		return nil, err
	}
	if r.Wait && method != MethodGet {
		return nil, requestError(EcodeInvalidField, `"wait" can only be used with GET requests`)
	}
	r.PrevValue = form.Get("prevValue")
	if _, ok := form["prevValue"]; ok && r.PrevValue == "" {
		return nil, requestError(EcodePrevValueReq, `"prevValue" cannot be empty`)
	}
	r.NoValueOnSuccess = getBool("noValueOnSuccess")
	if err != nil {
		return nil, err
	}
	if ttl := form.Get("ttl"); ttl != "" {
		n, perr := strconv.ParseUint(ttl, 10, 64)
		if perr != nil {
			return nil, requestError(EcodeTTLNaN, `invalid value for "ttl"`)
		}
		r.TTL = &n
	}
	if _, ok := form["prevExist"]; ok {
		b := getBool("prevExist")
		if err != nil {
			return nil, requestError(EcodeInvalidField, "invalid value for prevExist")
		}
		r.PrevExist = &b
	}
	r.Refresh = getBool("refresh")
	if err != nil {
		return nil, err
	}
	if r.Refresh {
		if _, ok := form["value"]; ok && r.Value != "" {
			return nil, requestError(EcodeRefreshValue, "A value was provided on a refresh")
		}
		if r.TTL == nil {
			return nil, requestError(EcodeRefreshTTLReq, "No TTL value set")
		}
	}
	return r, nil
}

func requestError(code int, cause string) *Error { return NewError(code, cause, 0) }

// IsWrite reports whether the request changes the tree.
func (r *Request) IsWrite() bool { return r.Method != MethodGet }

package v2store

import (
	"net/url"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/noded/noded/kvsm"
)

// TestWaitIndexCleared: a wait from an index the store compacted away is
// etcd's 401 "The event in requested index is outdated and cleared".
func TestWaitIndexCleared(t *testing.T) {
	store := kvsm.New(kvsm.Config{})
	h := &harness{store: store}
	now := time.Unix(1_700_000_000, 0)
	for _, v := range []string{"1", "2", "3"} {
		req, perr := ParseRequest(MethodPut, "/k", url.Values{"value": {v}})
		if perr != nil {
			t.Fatal(perr)
		}
		if res := runOp(t, h, req, now); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	if res := store.Apply(&pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: store.Rev()}}); res.Err != nil {
		t.Fatal(res.Err)
	}
	w := NewWatcher(&Request{Method: MethodGet, Path: "/k", Wait: true, WaitIndex: 2})
	created := store.WatchCreate(1, w.CreateRequest())
	if _, err := w.Created(created); err != nil {
		t.Fatalf("created: %v", err)
	}
	var got *Error
	for _, sr := range store.WatchPoll(1 << 10) {
		if _, err := w.Events(sr.Resp, now); err != nil {
			got = err
		}
	}
	if got == nil || got.Code != EcodeIndexCleared || got.Cause != "the requested history has been cleared [4/2]" || got.StatusCode() != 400 {
		t.Fatalf("wait from a compacted index: %+v, want 401 with the cleared history's bounds", got)
	}
}

func runOp(t *testing.T, h *harness, req *Request, now time.Time) *Result {
	t.Helper()
	op := NewOp(req)
	next, res := op.Start()
	for res == nil {
		resp, err := h.apply(next)
		next, res = op.Step(resp, err, now)
	}
	return res
}

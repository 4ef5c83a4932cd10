package sim

import (
	"fmt"
	"net/url"
	"time"

	"github.com/noded/noded/node"
	"github.com/noded/noded/server/v2/v2store"
)

// The v2 workload: clients make etcd v2 keys requests (set, create,
// compare-and-swap, compare-and-delete, update, TTLs and their refresh,
// in-order keys, recursive deletes, quorum gets) through package v2store,
// exactly as the v2 HTTP API does: each becomes a read Txn, maybe a lease
// grant, and a guarded write Txn, sent to the client's member one after
// the other. Every one of those v3 requests enters the KV history, so the
// linearizability checker covers the v2 layer's use of the store; v2
// waits are v3 watches over the v2 tree, checked by the watch checker.

// v2Paths are the nodes the workload touches: files, files in a
// directory that recursive deletes and TTL updates take as a whole, and
// a queue of in-order keys.
var v2Paths = []string{"/s/a", "/s/b", "/s/d/x", "/s/d/y", "/s/d"}

// v2Client is a client's v2 side: its request in flight, and the last
// file it was told about, which its compare-and-swaps and
// compare-and-deletes name (so that they succeed unless another client
// changed the file since).
type v2Client struct {
	op   *v2store.Op
	last *v2store.Node
}

func (w *world) issueV2(c *client) {
	if w.wrng.IntN(12) == 0 && len(c.liveWatches()) < watchesPerClientMax {
		// A wait on the whole v2 tree, from now or from a past index.
		req := &v2store.Request{Method: v2store.MethodGet, Path: "/s", Wait: true, Recursive: true}
		if c.lastRev > 1 && w.wrng.IntN(2) == 0 {
			req.WaitIndex = uint64(max(1, c.lastRev-int64(w.wrng.IntN(20))))
		}
		w.createWatch(c, v2store.NewWatcher(req).CreateRequest(), false)
		w.scheduleClient(c, w.thinkTime())
		return
	}
	req := w.randomV2Request(c)
	op := v2store.NewOp(req)
	next, res := op.Start()
	if res != nil {
		w.scheduleClient(c, w.thinkTime())
		return
	}
	c.v2.op = op
	w.issue(c, next, true)
}

func (w *world) randomV2Request(c *client) *v2store.Request {
	p := v2Paths[w.wrng.IntN(len(v2Paths))]
	value := fmt.Sprintf("c%d.%d", c.index, c.seq+1)
	form := url.Values{}
	method := v2store.MethodPut
	switch w.wrng.IntN(12) {
	case 0, 1: // set
		form.Set("value", value)
	case 2: // create
		form.Set("value", value)
		form.Set("prevExist", "false")
	case 3: // compare-and-swap on the value or index last seen
		form.Set("value", value)
		if last := c.v2.last; last != nil && w.wrng.IntN(2) == 0 {
			p = last.Key
			form.Set("prevValue", *last.Value)
		} else if last != nil {
			p = last.Key
			form.Set("prevIndex", fmt.Sprint(last.ModifiedIndex))
		} else {
			form.Set("prevIndex", fmt.Sprint(max(1, c.lastRev)))
		}
	case 4: // update, with a TTL now and then
		form.Set("value", value)
		form.Set("prevExist", "true")
		if w.wrng.IntN(2) == 0 {
			form.Set("ttl", fmt.Sprint(1+w.wrng.IntN(4)))
		}
	case 5: // a TTL, later expired by the leader
		form.Set("value", value)
		form.Set("ttl", fmt.Sprint(1+w.wrng.IntN(4)))
	case 6: // refresh
		form.Set("refresh", "true")
		form.Set("prevExist", "true")
		form.Set("ttl", fmt.Sprint(1+w.wrng.IntN(4)))
	case 7: // in-order key
		method, p = v2store.MethodPost, "/s/q"
		form.Set("value", value)
	case 8: // delete, recursively now and then
		method = v2store.MethodDelete
		if w.wrng.IntN(2) == 0 {
			form.Set("recursive", "true")
		}
	case 9: // compare-and-delete of the file last seen
		method = v2store.MethodDelete
		if last := c.v2.last; last != nil {
			p = last.Key
			form.Set("prevIndex", fmt.Sprint(last.ModifiedIndex))
		} else {
			form.Set("prevIndex", fmt.Sprint(max(1, c.lastRev)))
		}
	default: // a quorum get, recursive now and then
		method = v2store.MethodGet
		form.Set("quorum", "true")
		if w.wrng.IntN(2) == 0 {
			p = "/s"
			form.Set("recursive", "true")
		}
	}
	req, err := v2store.ParseRequest(method, p, form)
	if err != nil {
		panic(fmt.Sprintf("sim: a v2 request the workload made does not parse: %v", err))
	}
	return req
}

// v2Continue feeds a reply to the client's v2 request in flight and sends
// its next step; it reports whether it did. A step whose outcome is
// unknown (a timeout) ends the request, as it ends it for a v2 client.
func (w *world) v2Continue(c *client, r node.Result) bool {
	op := c.v2.op
	if op == nil {
		return false
	}
	if rev := headerOf(r.Resp).GetRevision(); rev > c.lastRev {
		c.lastRev = rev
	}
	if r.Err != nil && indeterminate(r.Err) {
		c.v2.op = nil
		return false
	}
	next, res := op.Step(r.Resp, r.Err, time.Unix(0, w.now))
	if res != nil {
		c.v2.op = nil
		req := op.Request()
		if ev := res.Event; ev != nil && ev.Node != nil && !ev.Node.Dir && ev.Node.Value != nil && ev.Action != v2store.ActionDelete && ev.Action != v2store.ActionCompareAndDelete {
			c.v2.last = ev.Node
		}
		if res.Err != nil {
			w.tracef("client %d: v2 %s %s: error %d %s", c.index, req.Method, req.Path, res.Err.Code, res.Err.Cause)
		} else {
			w.tracef("client %d: v2 %s %s: %s at %d", c.index, req.Method, req.Path, res.Event.Action, res.Index)
		}
		return false
	}
	w.issue(c, next, true)
	return true
}

package v2store

import (
	"fmt"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Watcher runs a waiting request (wait=true): one v3 watch over the whole
// v2 tree from waitIndex (or from now), whose changes it turns into the
// v2 events the request's path and recursive flag select, as etcd 3.4's
// watcher hub does.
type Watcher struct {
	req *Request
}

// NewWatcher prepares a waiting request.
func NewWatcher(req *Request) *Watcher { return &Watcher{req: req} }

// CreateRequest is the v3 watch to open.
func (w *Watcher) CreateRequest() *pb.WatchCreateRequest {
	end := []byte(Prefix)
	end[len(end)-1]++
	return &pb.WatchCreateRequest{Key: []byte(Prefix), RangeEnd: end, StartRevision: int64(w.req.WaitIndex), PrevKv: true}
}

// Created checks the watch's created (or refused) reply and gives the
// index the wait started at (X-Etcd-Index).
func (w *Watcher) Created(resp *pb.WatchResponse) (uint64, *Error) {
	if c := resp.GetCompactRevision(); c != 0 {
		return 0, NewError(EcodeIndexCleared, fmt.Sprintf("the requested history has been cleared [%v/%v]", c, w.req.WaitIndex), uint64(resp.GetHeader().GetRevision()))
	}
	if resp.GetCanceled() {
		return 0, NewError(EcodeRaftInternal, resp.GetCancelReason(), uint64(resp.GetHeader().GetRevision()))
	}
	return uint64(resp.GetHeader().GetRevision()), nil
}

// Events turns one v3 watch reply into the v2 events the request
// selects, in index order. A reply that reports compaction is the error
// it is for a v2 wait.
func (w *Watcher) Events(resp *pb.WatchResponse, now time.Time) ([]*Event, *Error) {
	if resp.GetCompactRevision() != 0 || resp.GetCanceled() {
		_, err := w.Created(resp)
		if err == nil {
			err = NewError(EcodeRaftInternal, "watch canceled", uint64(resp.GetHeader().GetRevision()))
		}
		return nil, err
	}
	var out []*Event
	evs := resp.GetEvents()
	for start := 0; start < len(evs); {
		rev := evs[start].GetKv().GetModRevision()
		end := start + 1
		for end < len(evs) && evs[end].GetKv().GetModRevision() == rev {
			end++
		}
		for _, ev := range DecodeRevision(evs[start:end], now) {
			if w.selects(ev.event, ev.deleted) {
				out = append(out, ev.event)
			}
		}
		start = end
	}
	return out, nil
}

// selects is etcd's watcher.notify: an event at the watched path, one
// below it for a recursive watcher (unless hidden), or the deletion of a
// directory that took the watched node with it.
func (w *Watcher) selects(ev *Event, deleted map[string]bool) bool {
	watched, key := w.req.Path, ev.Node.Key
	switch {
	case key == watched:
		return true
	case w.req.Recursive && (watched == "/" || strings.HasPrefix(key, watched+"/")):
		return !hiddenBelow(watched, key)
	case strings.HasPrefix(watched, key+"/") && deleted[watched]:
		return true
	}
	return false
}

// RevisionEvent is one v2 event a revision made, with the paths of every
// node the revision deleted.
type RevisionEvent struct {
	event   *Event
	deleted map[string]bool
}

// Event is the v2 event.
func (r RevisionEvent) Event() *Event { return r.event }

// DecodeRevision turns the v3 events of one revision (with prev_kv) into
// the v2 events it made: the journaled one for a v2 write (none for a
// refresh), an expire event for each topmost node a lease expiry removed,
// and nothing for a revision that touched no v2 node.
func DecodeRevision(evs []*mvccpb.Event, now time.Time) []RevisionEvent {
	var journal *mvccpb.Event
	data := map[string]*mvccpb.Event{}
	deleted := map[string]bool{}
	var deletedOrder []string
	for _, ev := range evs {
		if string(ev.GetKv().GetKey()) == string(journalKey) && ev.GetType() == mvccpb.Event_PUT {
			journal = ev
			continue
		}
		p := nodePath(ev.GetKv().GetKey())
		if p == "" {
			continue
		}
		data[p] = ev
		if ev.GetType() == mvccpb.Event_DELETE {
			deleted[p] = true
			deletedOrder = append(deletedOrder, p)
		}
	}
	rev := uint64(0)
	if len(evs) > 0 {
		rev = uint64(evs[0].GetKv().GetModRevision())
	}
	if journal != nil {
		silent, action, p, ok := decodeJournal(journal.GetKv().GetValue())
		if !ok || silent {
			return nil
		}
		ev := data[p]
		if ev == nil {
			return nil
		}
		out := &Event{Action: action}
		if ev.GetType() == mvccpb.Event_PUT {
			e, ok := entryOf(ev.GetKv())
			if !ok {
				return nil
			}
			out.Node = e.node(now)
			if prev, ok := entryOf(ev.GetPrevKv()); ok && ev.GetPrevKv() != nil && action != ActionCreate {
				out.PrevNode = prev.node(now)
			}
		} else {
			out.Node, out.PrevNode = deletedNode(p, ev, rev, now)
		}
		return []RevisionEvent{{event: out, deleted: deleted}}
	}
	// No journal: a lease expiry (or a v3 client's write, which deletes or
	// puts no record v2 made).
	var out []RevisionEvent
	for _, p := range deletedOrder {
		if parentDeleted(p, deleted) {
			continue
		}
		node, prev := deletedNode(p, data[p], rev, now)
		if prev == nil {
			continue
		}
		out = append(out, RevisionEvent{event: &Event{Action: ActionExpire, Node: node, PrevNode: prev}, deleted: deleted})
	}
	return out
}

func parentDeleted(p string, deleted map[string]bool) bool {
	for _, a := range ancestors(p) {
		if deleted[a] {
			return true
		}
	}
	return false
}

// deletedNode is the node of a delete or expire event and its prevNode.
func deletedNode(p string, ev *mvccpb.Event, rev uint64, now time.Time) (*Node, *Node) {
	n := &Node{Key: p, ModifiedIndex: rev}
	prev, ok := entryOf(ev.GetPrevKv())
	if ev.GetPrevKv() == nil || !ok {
		return n, nil
	}
	n.Dir = prev.rec.dir
	n.CreatedIndex = prev.createdIndex()
	return n, prev.node(now)
}

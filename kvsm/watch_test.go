package kvsm

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Watch tests: what each watcher is told, in what order, and when.

func watchKey(k string, start int64) *pb.WatchCreateRequest {
	return &pb.WatchCreateRequest{Key: []byte(k), StartRevision: start}
}

// evs renders a stream's replies compactly: "id:TYPE key@rev,... ".
func evs(resps []StreamResponse) string {
	var out []string
	for _, r := range resps {
		var parts []string
		for _, ev := range r.Resp.Events {
			p := fmt.Sprintf("%s %s@%d", ev.Type, ev.Kv.Key, ev.Kv.ModRevision)
			if ev.PrevKv != nil {
				p += fmt.Sprintf(" prev=%s", ev.PrevKv.Value)
			}
			parts = append(parts, p)
		}
		s := fmt.Sprintf("s%d/w%d", r.Stream, r.Resp.WatchId)
		switch {
		case r.Resp.Canceled:
			s += fmt.Sprintf(" canceled compact=%d", r.Resp.CompactRevision)
		case len(parts) == 0:
			s += fmt.Sprintf(" progress@%d", r.Resp.Header.Revision)
		default:
			s += " [" + strings.Join(parts, ", ") + "]"
		}
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

func TestWatchLiveEventsAndFilters(t *testing.T) {
	s := New(Config{})
	created := s.WatchCreate(1, watchKey("a", 0))
	if !created.Created || created.Canceled || created.WatchId != 0 || created.Header.Revision != 1 {
		t.Fatalf("create: %s", Describe(created))
	}
	s.WatchCreate(1, &pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte("b"), Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}})
	s.WatchCreate(1, &pb.WatchCreateRequest{Key: []byte("a"), PrevKv: true, Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}})
	s.WatchCreate(2, &pb.WatchCreateRequest{}) // empty key: watches "\x00" only
	mustApply(t, s, putReq("a", "1"))
	mustApply(t, s, putReq("a", "2"))
	mustApply(t, s, putReq("ab", "x"))
	mustApply(t, s, delReq("a", "b"))
	got := evs(s.WatchPoll(100))
	want := "s1/w0 [PUT a@2]; s1/w2 [PUT a@2]; s1/w0 [PUT a@3]; s1/w2 [PUT a@3 prev=1]; s1/w0 [DELETE a@5]; s1/w1 [DELETE a@5, DELETE ab@5]"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if more := s.WatchPoll(100); len(more) != 0 {
		t.Fatalf("second poll: %s", evs(more))
	}
}

func TestWatchFromCompactedRevision(t *testing.T) {
	s := New(Config{})
	mustApply(t, s, putReq("a", "1")) // 2
	mustApply(t, s, putReq("a", "2")) // 3
	mustApply(t, s, delReq("a", ""))  // 4
	mustApply(t, s, compactReq(4))
	created := s.WatchCreate(1, watchKey("a", 3))
	if !created.Created || created.Canceled {
		t.Fatalf("create: %s", Describe(created))
	}
	if got := evs(s.WatchPoll(100)); got != "s1/w0 canceled compact=4" {
		t.Fatalf("poll: %s", got)
	}
	// From the compact revision itself: the delete at 4 is still there.
	s.WatchCreate(1, &pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 4, PrevKv: true})
	if got := evs(s.WatchPoll(100)); got != "s1/w1 [DELETE a@4]" {
		t.Fatalf("watch from compact revision: %s", got)
	}
	neg := s.WatchCreate(1, watchKey("a", -1))
	if neg.WatchId != -1 || !neg.Canceled || !neg.Created || neg.CancelReason != rpctypes.ErrCompacted.Error() {
		t.Fatalf("negative start: %s", Describe(neg))
	}
}

func TestWatchFromFutureRevision(t *testing.T) {
	s := New(Config{})
	s.WatchCreate(1, watchKey("a", 4))
	mustApply(t, s, putReq("a", "1")) // 2
	mustApply(t, s, putReq("a", "2")) // 3
	mustApply(t, s, putReq("a", "3")) // 4
	mustApply(t, s, putReq("a", "4")) // 5
	if got := evs(s.WatchPoll(100)); got != "s1/w0 [PUT a@4]; s1/w0 [PUT a@5]" {
		t.Fatalf("future watch: %s", got)
	}
}

// A watcher whose start revision the store has not reached gets no progress
// reply, requested or periodic: one at the current revision would tell its
// client it has seen everything up to a revision below the one it asked
// to start from, and a client resuming a watch on a member that is behind
// (client/v3 resumes after the last event it received) would see the
// watch go backwards. Found by the real-process campaign (nodechaos):
// after a power-off, a watch resumed from revision 2154 on a member at
// 2150 was told progress@2150 after events up to 2153. etcd holds such
// progress back the same way.
func TestWatchFromFutureRevisionHasNoProgressUntilReached(t *testing.T) {
	s := New(Config{})
	mustApply(t, s, putReq("a", "1")) // 2
	s.WatchCreate(1, &pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 4, ProgressNotify: true})
	s.WatchRequestProgress(1)
	s.WatchProgressNotify()
	if got := evs(s.WatchPoll(100)); got != "" {
		t.Fatalf("progress below the start revision: %s", got)
	}
	mustApply(t, s, putReq("b", "1")) // 3
	if got := evs(s.WatchPoll(100)); got != "" {
		t.Fatalf("progress below the start revision: %s", got)
	}
	mustApply(t, s, putReq("b", "2")) // 4: the start revision is reached
	if got := evs(s.WatchPoll(100)); got != "s1/w-1 progress@4" {
		t.Fatalf("held progress request once the start revision is reached: %s", got)
	}
	s.WatchProgressNotify()
	if got := evs(s.WatchPoll(100)); got != "s1/w0 progress@4" {
		t.Fatalf("periodic progress once the start revision is reached: %s", got)
	}
}

func TestWatchCatchUpFromHistory(t *testing.T) {
	s := New(Config{})
	for i := range 5 {
		mustApply(t, s, putReq("k", fmt.Sprint(i))) // 2..6
		mustApply(t, s, putReq("other", "x"))       // 3..11
	}
	s.WatchCreate(1, &pb.WatchCreateRequest{Key: []byte("k"), StartRevision: 2, ProgressNotify: true})
	s.WatchRequestProgress(1) // deferred: the watcher is not synced yet
	// A budget of 2 events: catch-up comes in pieces, never splitting a revision.
	got := evs(s.WatchPoll(2))
	if got != "s1/w0 [PUT k@2, PUT k@4]" {
		t.Fatalf("first poll: %s", got)
	}
	got = evs(s.WatchPoll(100))
	if got != "s1/w0 [PUT k@6, PUT k@8, PUT k@10]; s1/w-1 progress@11" {
		t.Fatalf("second poll: %s", got)
	}
	mustApply(t, s, putReq("k", "live"))
	if got := evs(s.WatchPoll(100)); got != "s1/w0 [PUT k@12]" {
		t.Fatalf("live after catch-up: %s", got)
	}
}

func TestWatchTxnRevisionIsAtomic(t *testing.T) {
	s := New(Config{})
	s.WatchCreate(1, &pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte{0}})
	mustApply(t, s, txnReq(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a", "1"), opPut("b", "1"), opPut("c", "1")}}))
	mustApply(t, s, delReq("a", "z"))
	if got := evs(s.WatchPoll(100)); got != "s1/w0 [PUT a@2, PUT b@2, PUT c@2]; s1/w0 [DELETE a@3, DELETE b@3, DELETE c@3]" {
		t.Fatalf("%s", got)
	}
	// A later watcher replays the same revisions whole, even past a budget of 1.
	s.WatchCreate(1, &pb.WatchCreateRequest{Key: []byte("a"), RangeEnd: []byte{0}, StartRevision: 2})
	if got := evs(s.WatchPoll(1)); got != "s1/w1 [PUT a@2, PUT b@2, PUT c@2]" {
		t.Fatalf("catch-up with budget 1: %s", got)
	}
	if got := evs(s.WatchPoll(1)); got != "s1/w1 [DELETE a@3, DELETE b@3, DELETE c@3]" {
		t.Fatalf("catch-up with budget 1, second poll: %s", got)
	}
}

func TestWatchPauseAndQueueBound(t *testing.T) {
	s := New(Config{})
	s.WatchCreate(1, watchKey("a", 0))
	s.WatchCreate(1, watchKey("b", 0))
	mustApply(t, s, putReq("a", "1")) // 2
	s.WatchPause(1, 0)
	mustApply(t, s, putReq("a", "2")) // 3
	mustApply(t, s, putReq("b", "1")) // 4
	if got := evs(s.WatchPoll(100)); got != "s1/w0 [PUT a@2]; s1/w1 [PUT b@4]; s1/w0 [PUT a@3]" {
		t.Fatalf("pause: %s", got)
	}
	// Overflow the stream's queue bound: the watcher goes unsynced and
	// catches up from history, losing nothing.
	for i := range streamQueuedEventsMax + 10 {
		mustApply(t, s, putReq("a", fmt.Sprint(i)))
	}
	st := s.watch.stream(1)
	if st.queuedEvents > streamQueuedEventsMax || st.unsynced != 1 {
		t.Fatalf("queued %d events, %d unsynced", st.queuedEvents, st.unsynced)
	}
	var seen []int64
	for range 10 {
		for _, r := range s.WatchPoll(1000) {
			for _, ev := range r.Resp.Events {
				seen = append(seen, ev.Kv.ModRevision)
			}
		}
	}
	if len(seen) != streamQueuedEventsMax+10 || !slices.IsSorted(seen) || seen[0] != 5 {
		t.Fatalf("saw %d events from %v", len(seen), seen[:3])
	}
	if st.unsynced != 0 {
		t.Fatal("watcher never resynced")
	}
}

func TestWatchCancelDuplicateAndProgress(t *testing.T) {
	s := New(Config{})
	w := s.WatchCreate(1, &pb.WatchCreateRequest{Key: []byte("a"), WatchId: 7, ProgressNotify: true})
	if w.WatchId != 7 {
		t.Fatalf("client watch ID not honoured: %s", Describe(w))
	}
	dup := s.WatchCreate(1, &pb.WatchCreateRequest{Key: []byte("b"), WatchId: 7})
	if dup.WatchId != -1 || !dup.Canceled || dup.CancelReason != "mvcc: duplicate watch ID provided on the WatchStream" {
		t.Fatalf("duplicate: %s", Describe(dup))
	}
	bad := s.WatchCreate(1, &pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("a")})
	if !bad.Canceled || bad.WatchId != -1 {
		t.Fatalf("empty range: %s", Describe(bad))
	}
	s.WatchProgressNotify()
	if got := evs(s.WatchPoll(10)); got != "s1/w7 progress@1" {
		t.Fatalf("progress: %s", got)
	}
	mustApply(t, s, putReq("a", "1"))
	s.WatchProgressNotify() // events went out since the last tick: no progress
	if got := evs(s.WatchPoll(10)); got != "s1/w7 [PUT a@2]" {
		t.Fatalf("after put: %s", got)
	}
	s.WatchProgressNotify()
	if got := evs(s.WatchPoll(10)); got != "s1/w7 progress@2" {
		t.Fatalf("quiet tick: %s", got)
	}
	mustApply(t, s, putReq("a", "2"))
	c := s.WatchCancel(1, 7)
	if c == nil || !c.Canceled || c.WatchId != 7 {
		t.Fatalf("cancel: %v", c)
	}
	if got := s.WatchPoll(10); len(got) != 0 {
		t.Fatalf("events after cancel: %s", evs(got))
	}
	if s.WatchCancel(1, 7) != nil || s.WatchCancel(9, 1) != nil {
		t.Fatal("cancel of an unknown watcher answered")
	}
	s.WatchRequestProgress(1) // no watchers left: etcd sends nothing
	if got := s.WatchPoll(10); len(got) != 0 {
		t.Fatalf("progress on an empty stream: %s", evs(got))
	}
	s.WatchCloseStream(1)
	if s.watch.streams.Len() != 0 {
		t.Fatal("stream survived close")
	}
}

func TestWatchSurvivesReplace(t *testing.T) {
	leader := New(Config{})
	follower := New(Config{})
	follower.WatchCreate(1, watchKey("a", 0))
	mustApply(t, leader, putReq("a", "1"))
	mustApply(t, leader, putReq("a", "2"))
	if err := follower.Replace(leader.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if got := evs(follower.WatchPoll(10)); got != "s1/w0 [PUT a@2, PUT a@3]" {
		t.Fatalf("after replace: %s", got)
	}
	if follower.StateHash() != leader.StateHash() {
		t.Fatal("replace did not take the leader's state")
	}
}

func TestStreamResponseString(t *testing.T) {
	r := StreamResponse{Stream: 3, Resp: &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 5}, WatchId: 2,
		Events: []*mvccpb.Event{{Type: mvccpb.Event_PUT, Kv: &mvccpb.KeyValue{Key: []byte("k"), Value: []byte("v"), ModRevision: 5, CreateRevision: 5, Version: 1}}}}}
	if got, want := r.String(), `stream=3 Watch{rev=5 id=2 events=[PUT "k"@5{c=5 v=1 val="v"}]}`; got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}

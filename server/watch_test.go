package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func recvWatch(t *testing.T, ch clientv3.WatchChan) clientv3.WatchResponse {
	t.Helper()
	select {
	case wr, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return wr
	case <-time.After(waitMax):
		t.Fatal("no watch response")
	}
	return clientv3.WatchResponse{}
}

// TestWatch covers etcd's watch semantics end to end: events in revision
// order with prev_kv, several watchers on one stream, a watch from a past
// revision, progress requests, and a watch below the compaction revision
// cancelled with ErrCompacted.
func TestWatch(t *testing.T) {
	tms := startCluster(t, 1)
	c := newClient(t, tms[0])
	ctx := testContext(t)

	first, err := c.Put(ctx, "w/a", "1")
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	prefixWatch := c.Watch(wctx, "w/", clientv3.WithPrefix(), clientv3.WithPrevKV())
	keyWatch := c.Watch(wctx, "w/b") // the client puts both on one stream
	// Both watchers are created before the writes below (the client
	// waits for each created reply before it hands out events).
	if err := c.RequestProgress(wctx); err != nil {
		t.Fatal(err)
	}
	put1, err := c.Put(ctx, "w/a", "2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "w/b", "3"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, "w/a"); err != nil {
		t.Fatal(err)
	}
	var events []*clientv3.Event
	for len(events) < 3 {
		wr := recvWatch(t, prefixWatch)
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		events = append(events, wr.Events...)
	}
	if events[0].Kv.ModRevision != put1.Header.Revision || string(events[0].PrevKv.Value) != "1" ||
		events[1].Type != mvccpb.PUT || string(events[1].Kv.Key) != "w/b" ||
		events[2].Type != mvccpb.DELETE || string(events[2].PrevKv.Value) != "2" {
		t.Fatalf("prefix watch events: %v", events)
	}
	for wr := recvWatch(t, keyWatch); ; wr = recvWatch(t, keyWatch) {
		if len(wr.Events) > 0 {
			if string(wr.Events[0].Kv.Key) != "w/b" || len(wr.Events) != 1 {
				t.Fatalf("key watch events: %v", wr.Events)
			}
			break
		}
	}

	// From a past revision: the whole history of w/a again.
	past := c.Watch(ctx, "w/a", clientv3.WithRev(first.Header.Revision))
	var replay []*clientv3.Event
	for len(replay) < 3 {
		replay = append(replay, recvWatch(t, past).Events...)
	}
	if string(replay[0].Kv.Value) != "1" || string(replay[1].Kv.Value) != "2" || replay[2].Type != mvccpb.DELETE {
		t.Fatalf("watch from revision %d: %v", first.Header.Revision, replay)
	}

	// Compaction cancels a watch that starts below it.
	last, err := c.Put(ctx, "w/c", "4")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctx, last.Header.Revision); err != nil {
		t.Fatal(err)
	}
	compacted := recvWatch(t, c.Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(first.Header.Revision)))
	if compacted.Err() != rpctypes.ErrCompacted || compacted.CompactRevision != last.Header.Revision {
		t.Fatalf("watch below the compaction: err %v compact %d, want %v at %d", compacted.Err(), compacted.CompactRevision, rpctypes.ErrCompacted, last.Header.Revision)
	}
}

// rawWatchClient opens a plain gRPC Watch stream, so that tests see every
// response as sent (the etcd client merges fragments and hides progress).
func rawWatchClient(t *testing.T, tm *testMember) pb.WatchClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+tm.clientAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewWatchClient(conn)
}

// TestWatchFragmentsAndProgress checks etcd's fragmenting of a response
// over --max-request-bytes (fragment=true on all but the last part) and a
// stream-wide progress reply (watch ID -1, the current revision).
func TestWatchFragmentsAndProgress(t *testing.T) {
	tms := newTestConfigs(t, 1)
	tms[0].cfg.MaxRequestBytes = 64 * 1024
	tms[0].start(t)
	waitLeader(t, tms)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	for i := range 10 {
		if _, err := c.Put(ctx, fmt.Sprintf("f/%d", i), strings.Repeat("x", 20*1024)); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := rawWatchClient(t, tms[0]).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(r *pb.WatchRequest) {
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: []byte("f/"), RangeEnd: []byte("f0"), PrevKv: true, Fragment: true}}})
	created, err := stream.Recv()
	if err != nil || !created.Created || created.WatchId != 0 {
		t.Fatalf("create: %v %v", created, err)
	}
	send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
	progress, err := stream.Recv()
	if err != nil || progress.WatchId != -1 || len(progress.Events) != 0 || progress.Header.Revision != created.Header.Revision {
		t.Fatalf("progress reply: %v %v, want watch ID -1 at revision %d", progress, err, created.Header.Revision)
	}
	del, err := c.Delete(ctx, "f/", clientv3.WithPrefix())
	if err != nil || del.Deleted != 10 {
		t.Fatalf("delete: %v %v", del, err)
	}
	var parts []*pb.WatchResponse
	events := 0
	for events < 10 {
		wr, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, wr)
		events += len(wr.Events)
	}
	if len(parts) < 2 {
		t.Fatalf("a %d-event revision with 20 KiB prev_kvs came in %d response; want fragments under 64 KiB", events, len(parts))
	}
	for i, p := range parts {
		if p.Fragment != (i < len(parts)-1) {
			t.Fatalf("fragment %d of %d has fragment=%t", i, len(parts), p.Fragment)
		}
		for _, ev := range p.Events {
			if ev.Type != mvccpb.DELETE || ev.Kv.ModRevision != del.Header.Revision || len(ev.PrevKv.Value) != 20*1024 {
				t.Fatalf("fragment %d: event %v", i, ev)
			}
		}
	}
}

// TestSlowWatcherLosesNothing makes a watch stream's client stop reading
// while thousands of large events arrive, so that its queue fills and the
// member pauses the watcher instead of buffering; once the client reads
// again it must get every event exactly once, in order.
func TestSlowWatcherLosesNothing(t *testing.T) {
	tms := startCluster(t, 1)
	m := tms[0].m
	c := newClient(t, tms[0])
	ctx := testContext(t)
	stream, err := rawWatchClient(t, tms[0]).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: []byte("s/"), RangeEnd: []byte("s0")}}}); err != nil {
		t.Fatal(err)
	}
	created, err := stream.Recv()
	if err != nil || !created.Created {
		t.Fatalf("create: %v %v", created, err)
	}
	const writers, perWriter = 8, 150
	value := strings.Repeat("v", 32*1024)
	putConcurrently(t, ctx, c, writers, perWriter,
		func(w, i int) string { return fmt.Sprintf("s/%d/%d", w, i) },
		func(int, int) string { return value })
	if m.metrics.watchersDropped.Load() == 0 {
		t.Fatalf("%d events of 32 KiB to a client that read none never filled the stream's queue", writers*perWriter)
	}
	next := created.Header.Revision + 1
	for got := 0; got < writers*perWriter; {
		wr, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d of %d events (next revision %d): %v", got, writers*perWriter, next, err)
		}
		if wr.Created || wr.Canceled {
			t.Fatalf("the client saw the watcher's pause: %v", wr)
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision != next {
				t.Fatalf("event at revision %d, want %d (lost or repeated events)", ev.Kv.ModRevision, next)
			}
			next++
			got++
		}
	}
}

package server

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestSingleMemberKV drives one member with etcd's Go client through put,
// get (linearizable and serializable), prefix reads, delete, txn and
// compaction, checking revisions the way etcd numbers them.
func TestSingleMemberKV(t *testing.T) {
	tms := startCluster(t, 1)
	c := newClient(t, tms[0])
	ctx := testContext(t)

	put, err := c.Put(ctx, "foo", "bar")
	if err != nil {
		t.Fatal(err)
	}
	rev := put.Header.Revision
	if put.Header.MemberId != tms[0].m.ID() || put.Header.ClusterId != tms[0].m.ClusterID() {
		t.Fatalf("header %v names another member or cluster", put.Header)
	}
	get, err := c.Get(ctx, "foo")
	if err != nil {
		t.Fatal(err)
	}
	if len(get.Kvs) != 1 || string(get.Kvs[0].Value) != "bar" || get.Kvs[0].CreateRevision != rev || get.Kvs[0].Version != 1 {
		t.Fatalf("get foo = %v, want bar created at %d", get.Kvs, rev)
	}
	if _, err := c.Put(ctx, "foo", "baz"); err != nil {
		t.Fatal(err)
	}
	sget, err := c.Get(ctx, "foo", clientv3.WithSerializable())
	if err != nil {
		t.Fatal(err)
	}
	if string(sget.Kvs[0].Value) != "baz" || sget.Kvs[0].Version != 2 {
		t.Fatalf("serializable get foo = %v, want baz at version 2", sget.Kvs)
	}
	for _, k := range []string{"p/a", "p/b", "p/c"} {
		if _, err := c.Put(ctx, k, strings.ToUpper(k)); err != nil {
			t.Fatal(err)
		}
	}
	prefix, err := c.Get(ctx, "p/", clientv3.WithPrefix(), clientv3.WithLimit(2))
	if err != nil {
		t.Fatal(err)
	}
	if prefix.Count != 3 || len(prefix.Kvs) != 2 || !prefix.More || string(prefix.Kvs[0].Key) != "p/a" {
		t.Fatalf("prefix get: count=%d kvs=%v more=%t, want count 3, 2 kvs from p/a, more", prefix.Count, prefix.Kvs, prefix.More)
	}
	del, err := c.Delete(ctx, "p/", clientv3.WithPrefix(), clientv3.WithPrevKV())
	if err != nil {
		t.Fatal(err)
	}
	if del.Deleted != 3 || len(del.PrevKvs) != 3 {
		t.Fatalf("delete prefix: deleted=%d prev=%d, want 3 and 3", del.Deleted, len(del.PrevKvs))
	}

	txn, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.Value("foo"), "=", "baz")).
		Then(clientv3.OpPut("foo", "qux"), clientv3.OpGet("foo")).
		Else(clientv3.OpGet("nothing")).Commit()
	if err != nil {
		t.Fatal(err)
	}
	if !txn.Succeeded || len(txn.Responses) != 2 || string(txn.Responses[1].GetResponseRange().Kvs[0].Value) != "qux" {
		t.Fatalf("txn: succeeded=%t responses=%v, want the then branch reading qux", txn.Succeeded, txn.Responses)
	}
	failed, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Version("foo"), "=", 1)).Else(clientv3.OpGet("foo")).Commit()
	if err != nil {
		t.Fatal(err)
	}
	if failed.Succeeded || failed.Header.Revision != txn.Header.Revision {
		t.Fatalf("read-only failing txn: succeeded=%t rev=%d, want the else branch at rev %d", failed.Succeeded, failed.Header.Revision, txn.Header.Revision)
	}

	// Compaction: reads below it fail with etcd's error, at it succeed.
	last := txn.Header.Revision
	if _, err := c.Compact(ctx, last-1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "foo", clientv3.WithRev(last-2)); err != rpctypes.ErrCompacted {
		t.Fatalf("get below the compact revision: %v, want %v", err, rpctypes.ErrCompacted)
	}
	if _, err := c.Get(ctx, "foo", clientv3.WithRev(last-1)); err != nil {
		t.Fatalf("get at the compact revision: %v", err)
	}
	if _, err := c.Compact(ctx, last-1); err != rpctypes.ErrCompacted {
		t.Fatalf("compact again at the same revision: %v, want %v", err, rpctypes.ErrCompacted)
	}
	if _, err := c.Get(ctx, "foo", clientv3.WithRev(last+100)); err != rpctypes.ErrFutureRev {
		t.Fatalf("get at a future revision: %v, want %v", err, rpctypes.ErrFutureRev)
	}
}

// TestErrorsCarryEtcdCodes checks that bad requests get etcd's gRPC codes
// and texts, and that they change nothing.
func TestErrorsCarryEtcdCodes(t *testing.T) {
	tms := newTestConfigs(t, 1)
	tms[0].cfg.MaxTxnOps = 4
	tms[0].cfg.MaxRequestBytes = 64 * 1024
	tms[0].start(t)
	waitLeader(t, tms)
	c := newClient(t, tms[0])
	ctx := testContext(t)

	check := func(what string, err error, code codes.Code, text string) {
		t.Helper()
		// The client turns etcd's statuses into rpctypes.EtcdError values,
		// which keep the code and the text.
		var got codes.Code
		if ee, ok := err.(rpctypes.EtcdError); ok {
			got = ee.Code()
		} else {
			got = status.Code(err)
		}
		if err == nil || got != code || err.Error() != text {
			t.Errorf("%s: got %v (code %s), want code %s %q", what, err, got, code, text)
		}
	}
	_, err := c.Put(ctx, "big", strings.Repeat("x", 100*1024))
	check("too large a put", err, codes.InvalidArgument, "etcdserver: request is too large")
	ops := make([]clientv3.Op, 5)
	for i := range ops {
		ops[i] = clientv3.OpPut("k"+string(rune('a'+i)), "v")
	}
	_, err = c.Txn(ctx).Then(ops...).Commit()
	check("too many txn ops", err, codes.InvalidArgument, "etcdserver: too many operations in txn request")
	_, err = c.Txn(ctx).Then(clientv3.OpPut("d", "1"), clientv3.OpPut("d", "2")).Commit()
	check("duplicate key in txn", err, codes.InvalidArgument, "etcdserver: duplicate key given in txn request")
	_, err = c.Put(ctx, "", "v")
	check("empty key", err, codes.InvalidArgument, "etcdserver: key is not provided")
	_, err = c.Put(ctx, "x", "v", clientv3.WithLease(12345))
	check("unknown lease", err, codes.NotFound, "etcdserver: requested lease not found")
	_, err = c.Compact(ctx, 1000)
	check("compaction at a future revision", err, codes.OutOfRange, "etcdserver: mvcc: required revision is a future revision")
	_, err = c.Put(ctx, "x", "", clientv3.WithIgnoreValue())
	check("ignore_value on a missing key", err, codes.InvalidArgument, "etcdserver: key not found")

	get, err := c.Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(get.Kvs) != 0 || get.Header.Revision != 1 {
		t.Fatalf("after only refused requests: %d keys at revision %d, want none at revision 1", len(get.Kvs), get.Header.Revision)
	}
}

// TestFullQueueAnswersTooManyRequests holds the member loop so that client
// requests pile up: those beyond the queue's bound fail with etcd's
// TooManyRequests after a bounded wait instead of blocking forever, and
// the queued ones are served once the loop runs again.
func TestFullQueueAnswersTooManyRequests(t *testing.T) {
	tms := startCluster(t, 1)
	m := tms[0].m
	ctx := testContext(t)
	hold, held := make(chan struct{}), make(chan struct{})
	go m.call(ctx, func() { close(held); <-hold })
	<-held
	const extra = 50
	results := make(chan error, clientQueueMax+extra)
	for range clientQueueMax + extra {
		go func() {
			_, err := m.do(ctx, &pb.RangeRequest{Key: []byte("k"), Serializable: true})
			results <- err
		}()
	}
	tooMany := 0
	for tooMany < extra {
		select {
		case err := <-results:
			if err != rpctypes.ErrGRPCRequestTooManyRequests {
				t.Fatalf("a request beyond the queue: %v, want %v", err, rpctypes.ErrGRPCRequestTooManyRequests)
			}
			tooMany++
		case <-time.After(waitMax):
			t.Fatalf("only %d of %d requests beyond the queue were refused", tooMany, extra)
		}
	}
	close(hold)
	for range clientQueueMax {
		if err := <-results; err != nil {
			t.Fatalf("a queued request: %v", err)
		}
	}
}

// TestSerializableReadsOffTheLoop: serializable reads come from the view
// the loop publishes, concurrently with writes; a client still reads its
// own acknowledged writes from the same member, and revisions it sees
// never go back.
func TestSerializableReadsOffTheLoop(t *testing.T) {
	tms := startCluster(t, 1)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lastRev int64
			for i := range 50 {
				put, err := c.Put(ctx, fmt.Sprint("rw", w), fmt.Sprint(i))
				if err != nil {
					errs <- err
					return
				}
				get, err := c.Get(ctx, fmt.Sprint("rw", w), clientv3.WithSerializable())
				if err != nil {
					errs <- err
					return
				}
				if len(get.Kvs) != 1 || get.Kvs[0].ModRevision < put.Header.Revision || get.Header.Revision < lastRev {
					errs <- fmt.Errorf("serializable read after put at %d: %v at revision %d (last seen %d)", put.Header.Revision, get.Kvs, get.Header.Revision, lastRev)
					return
				}
				lastRev = get.Header.Revision
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

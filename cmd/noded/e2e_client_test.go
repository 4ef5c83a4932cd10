package main

// go.etcd.io/etcd/client/v3 against a 3-member cluster: the KV, Txn, Lease,
// Watch, Cluster and Maintenance calls an application makes.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// waitTimeout bounds a poll for a condition that takes cluster time
	// (a lease expiring, an event arriving).
	waitTimeout = 60 * time.Second
	// Wire texts of etcd's errors (api/v3rpc/rpctypes), as clients match them.
	compactedErrText = "etcdserver: mvcc: required revision has been compacted"
	futureRevErrText = "etcdserver: mvcc: required revision is a future revision"
)

func TestClientKV(t *testing.T) {
	c := newCluster(t, 3)
	cli := c.client(t)

	t.Run("PutGetDelete", func(t *testing.T) {
		put1, err := cli.Put(ctxTimeout(t), "kv/a", "v1")
		if err != nil {
			t.Fatalf("put: %v", err)
		}
		r1 := put1.Header.Revision
		got := mustGet(t, cli, "kv/a")
		wantKV(t, got, "kv/a", "v1", r1, r1, 1)

		put2, err := cli.Put(ctxTimeout(t), "kv/a", "v2", clientv3.WithPrevKV())
		if err != nil {
			t.Fatalf("put: %v", err)
		}
		r2 := put2.Header.Revision
		if r2 != r1+1 {
			t.Errorf("second put at revision %d, want %d", r2, r1+1)
		}
		if put2.PrevKv == nil || string(put2.PrevKv.Value) != "v1" {
			t.Errorf("put prev_kv = %v, want value v1", put2.PrevKv)
		}
		wantKV(t, mustGet(t, cli, "kv/a"), "kv/a", "v2", r1, r2, 2)

		// Every member serves the write, not only the one that took it.
		for _, m := range c.members {
			wantKV(t, mustGet(t, c.client(t, m.clientURL), "kv/a"), "kv/a", "v2", r1, r2, 2)
		}

		del, err := cli.Delete(ctxTimeout(t), "kv/a", clientv3.WithPrevKV())
		if err != nil {
			t.Fatalf("delete: %v", err)
		}
		if del.Deleted != 1 || len(del.PrevKvs) != 1 || string(del.PrevKvs[0].Value) != "v2" {
			t.Errorf("delete: deleted %d prev_kvs %v, want 1 with value v2", del.Deleted, del.PrevKvs)
		}
		if got := mustGet(t, cli, "kv/a"); got.Count != 0 || len(got.Kvs) != 0 {
			t.Errorf("get after delete: count %d kvs %v, want none", got.Count, got.Kvs)
		}
		// Deleting nothing is no write: the revision stays.
		del2, err := cli.Delete(ctxTimeout(t), "kv/a")
		if err != nil {
			t.Fatalf("delete: %v", err)
		}
		if del2.Deleted != 0 || del2.Header.Revision != del.Header.Revision {
			t.Errorf("second delete: deleted %d at revision %d, want 0 at %d", del2.Deleted, del2.Header.Revision, del.Header.Revision)
		}
		// Re-creating starts a new generation.
		put3, err := cli.Put(ctxTimeout(t), "kv/a", "v3")
		if err != nil {
			t.Fatalf("put: %v", err)
		}
		r3 := put3.Header.Revision
		wantKV(t, mustGet(t, cli, "kv/a"), "kv/a", "v3", r3, r3, 1)
	})

	t.Run("Prefix", func(t *testing.T) {
		for _, k := range []string{"pfx/b", "pfx/a", "pfx/c", "pfy", "pf"} {
			if _, err := cli.Put(ctxTimeout(t), k, "val-"+k); err != nil {
				t.Fatalf("put %s: %v", k, err)
			}
		}
		got := mustGet(t, cli, "pfx/", clientv3.WithPrefix())
		if keys := kvKeys(got.Kvs); fmt.Sprint(keys) != "[pfx/a pfx/b pfx/c]" || got.Count != 3 {
			t.Errorf("prefix get: keys %v count %d, want [pfx/a pfx/b pfx/c] count 3", keys, got.Count)
		}
		for _, kv := range got.Kvs {
			if string(kv.Value) != "val-"+string(kv.Key) {
				t.Errorf("prefix get: %s = %q", kv.Key, kv.Value)
			}
		}
		limited := mustGet(t, cli, "pfx/", clientv3.WithPrefix(), clientv3.WithLimit(2))
		if keys := kvKeys(limited.Kvs); fmt.Sprint(keys) != "[pfx/a pfx/b]" || !limited.More || limited.Count != 3 {
			t.Errorf("prefix get limit 2: keys %v more %v count %d, want [pfx/a pfx/b] true 3", keys, limited.More, limited.Count)
		}
		counted := mustGet(t, cli, "pfx/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if counted.Count != 3 || len(counted.Kvs) != 0 {
			t.Errorf("prefix count only: count %d kvs %d, want 3 and none", counted.Count, len(counted.Kvs))
		}
		desc := mustGet(t, cli, "pfx/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
		if keys := kvKeys(desc.Kvs); fmt.Sprint(keys) != "[pfx/c pfx/b pfx/a]" {
			t.Errorf("prefix get descending: keys %v", keys)
		}
		del, err := cli.Delete(ctxTimeout(t), "pfx/", clientv3.WithPrefix())
		if err != nil {
			t.Fatalf("prefix delete: %v", err)
		}
		if del.Deleted != 3 {
			t.Errorf("prefix delete: deleted %d, want 3", del.Deleted)
		}
		if got := mustGet(t, cli, "pf", clientv3.WithPrefix()); fmt.Sprint(kvKeys(got.Kvs)) != "[pf pfy]" {
			t.Errorf("after prefix delete, keys under pf: %v, want [pf pfy]", kvKeys(got.Kvs))
		}
	})

	t.Run("TxnCompareAndSwap", func(t *testing.T) {
		if _, err := cli.Put(ctxTimeout(t), "txn/cas", "1"); err != nil {
			t.Fatalf("put: %v", err)
		}
		cas := func() *clientv3.TxnResponse {
			resp, err := cli.Txn(ctxTimeout(t)).
				If(clientv3.Compare(clientv3.Value("txn/cas"), "=", "1")).
				Then(clientv3.OpPut("txn/cas", "2"), clientv3.OpGet("txn/cas")).
				Else(clientv3.OpGet("txn/cas")).
				Commit()
			if err != nil {
				t.Fatalf("txn: %v", err)
			}
			return resp
		}
		first := cas()
		if !first.Succeeded || len(first.Responses) != 2 {
			t.Fatalf("first txn: succeeded %v with %d responses, want true with 2", first.Succeeded, len(first.Responses))
		}
		if kvs := first.Responses[1].GetResponseRange().GetKvs(); len(kvs) != 1 || string(kvs[0].Value) != "2" {
			t.Errorf("first txn: get in success branch = %v, want value 2", kvs)
		}
		second := cas()
		if second.Succeeded || len(second.Responses) != 1 {
			t.Fatalf("second txn: succeeded %v with %d responses, want false with 1", second.Succeeded, len(second.Responses))
		}
		if kvs := second.Responses[0].GetResponseRange().GetKvs(); len(kvs) != 1 || string(kvs[0].Value) != "2" {
			t.Errorf("second txn: get in failure branch = %v, want value 2", kvs)
		}
		// A read-only branch writes nothing, so the revision does not move.
		if second.Header.Revision != first.Header.Revision {
			t.Errorf("read-only txn moved the revision from %d to %d", first.Header.Revision, second.Header.Revision)
		}

		// Create-if-absent: a missing key has version 0.
		create := func() bool {
			resp, err := cli.Txn(ctxTimeout(t)).
				If(clientv3.Compare(clientv3.Version("txn/new"), "=", 0)).
				Then(clientv3.OpPut("txn/new", "mine")).
				Commit()
			if err != nil {
				t.Fatalf("txn: %v", err)
			}
			return resp.Succeeded
		}
		if !create() {
			t.Errorf("create-if-absent on a missing key failed")
		}
		if create() {
			t.Errorf("create-if-absent on an existing key succeeded")
		}
		// Two writes of one key in one txn are refused with etcd's error.
		_, err := cli.Txn(ctxTimeout(t)).Then(clientv3.OpPut("txn/dup", "1"), clientv3.OpPut("txn/dup", "2")).Commit()
		if !errors.Is(err, rpctypes.ErrDuplicateKey) {
			t.Errorf("txn putting one key twice: err %v, want %v", err, rpctypes.ErrDuplicateKey)
		}
	})

	t.Run("GetAtOldRevision", func(t *testing.T) {
		var revs []int64
		for i := 1; i <= 3; i++ {
			resp, err := cli.Put(ctxTimeout(t), "hist/k", fmt.Sprint(i))
			if err != nil {
				t.Fatalf("put: %v", err)
			}
			revs = append(revs, resp.Header.Revision)
		}
		for i, rev := range revs {
			got := mustGet(t, cli, "hist/k", clientv3.WithRev(rev))
			wantKV(t, got, "hist/k", fmt.Sprint(i+1), revs[0], rev, int64(i+1))
		}
		if got := mustGet(t, cli, "hist/k", clientv3.WithRev(revs[0]-1)); got.Count != 0 {
			t.Errorf("get before the key existed: count %d, want 0", got.Count)
		}
		future := revs[2] + 1000
		_, err := cli.Get(ctxTimeout(t), "hist/k", clientv3.WithRev(future))
		if !errors.Is(err, rpctypes.ErrFutureRev) {
			t.Errorf("get at future revision: err %v, want %v", err, rpctypes.ErrFutureRev)
		}
		wantRawRangeError(t, cli, "hist/k", future, codes.OutOfRange, futureRevErrText)
	})

	t.Run("MemberList", func(t *testing.T) {
		resp, err := cli.MemberList(ctxTimeout(t))
		if err != nil {
			t.Fatalf("member list: %v", err)
		}
		if len(resp.Members) != len(c.members) {
			t.Fatalf("member list has %d members, want %d: %v", len(resp.Members), len(c.members), resp.Members)
		}
		byName := map[string]*etcdserverpb.Member{}
		ids := map[uint64]bool{}
		for _, m := range resp.Members {
			byName[m.Name] = m
			ids[m.ID] = true
		}
		if len(ids) != len(c.members) || ids[0] {
			t.Errorf("member IDs not distinct and non-zero: %v", resp.Members)
		}
		for _, m := range c.members {
			got := byName[m.name]
			if got == nil {
				t.Errorf("member %s missing from %v", m.name, resp.Members)
				continue
			}
			if fmt.Sprint(got.PeerURLs) != fmt.Sprint([]string{m.peerURL}) || fmt.Sprint(got.ClientURLs) != fmt.Sprint([]string{m.clientURL}) || got.IsLearner {
				t.Errorf("member %s: peer %v client %v learner %v, want peer [%s] client [%s] voter", m.name, got.PeerURLs, got.ClientURLs, got.IsLearner, m.peerURL, m.clientURL)
			}
			// Each member's Status names itself and the same cluster.
			st, err := cli.Status(ctxTimeout(t), m.clientURL)
			if err != nil {
				t.Fatalf("status of %s: %v", m.name, err)
			}
			if st.Header.MemberId != got.ID || st.Header.ClusterId != resp.Header.ClusterId {
				t.Errorf("status of %s: member %x cluster %x, want %x and %x", m.name, st.Header.MemberId, st.Header.ClusterId, got.ID, resp.Header.ClusterId)
			}
			if !ids[st.Leader] || st.RaftTerm == 0 || st.Version == "" {
				t.Errorf("status of %s: leader %x term %d version %q", m.name, st.Leader, st.RaftTerm, st.Version)
			}
		}
	})

	// Last: compaction drops the history the subtests above read.
	t.Run("Compaction", func(t *testing.T) {
		var revs []int64
		for i := 1; i <= 3; i++ {
			resp, err := cli.Put(ctxTimeout(t), "compact/k", fmt.Sprint(i))
			if err != nil {
				t.Fatalf("put: %v", err)
			}
			revs = append(revs, resp.Header.Revision)
		}
		if _, err := cli.Compact(ctxTimeout(t), revs[1], clientv3.WithCompactPhysical()); err != nil {
			t.Fatalf("compact at %d: %v", revs[1], err)
		}
		_, err := cli.Get(ctxTimeout(t), "compact/k", clientv3.WithRev(revs[0]))
		if !errors.Is(err, rpctypes.ErrCompacted) {
			t.Errorf("get below the compaction: err %v, want %v", err, rpctypes.ErrCompacted)
		}
		wantRawRangeError(t, cli, "compact/k", revs[0], codes.OutOfRange, compactedErrText)
		// The compaction revision itself stays readable.
		wantKV(t, mustGet(t, cli, "compact/k", clientv3.WithRev(revs[1])), "compact/k", "2", revs[0], revs[1], 2)
		if _, err := cli.Compact(ctxTimeout(t), revs[1]); !errors.Is(err, rpctypes.ErrCompacted) {
			t.Errorf("compacting again at %d: err %v, want %v", revs[1], err, rpctypes.ErrCompacted)
		}
		// A watch from before the compaction is cancelled with its revision.
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		wresp, ok := <-cli.Watch(ctx, "compact/k", clientv3.WithRev(revs[0]))
		if !ok {
			t.Fatalf("watch from a compacted revision closed without a response")
		}
		if wresp.CompactRevision != revs[1] || !errors.Is(wresp.Err(), rpctypes.ErrCompacted) {
			t.Errorf("watch from compacted revision %d: compact_revision %d err %v, want %d and %v", revs[0], wresp.CompactRevision, wresp.Err(), revs[1], rpctypes.ErrCompacted)
		}
		wantSameHashKV(t, c, cli)
	})
}

func TestClientLease(t *testing.T) {
	c := newCluster(t, 3)
	cli := c.client(t)

	t.Run("Expiry", func(t *testing.T) {
		grant, err := cli.Grant(ctxTimeout(t), 3)
		if err != nil {
			t.Fatalf("grant: %v", err)
		}
		if grant.ID == 0 || grant.TTL != 3 {
			t.Fatalf("grant: id %x ttl %d, want a non-zero id and ttl 3", grant.ID, grant.TTL)
		}
		put, err := cli.Put(ctxTimeout(t), "lease/expiring", "v", clientv3.WithLease(grant.ID))
		if err != nil {
			t.Fatalf("put with lease: %v", err)
		}
		ttl, err := cli.TimeToLive(ctxTimeout(t), grant.ID, clientv3.WithAttachedKeys())
		if err != nil {
			t.Fatalf("time to live: %v", err)
		}
		if ttl.GrantedTTL != 3 || ttl.TTL < 0 || ttl.TTL > 3 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "lease/expiring" {
			t.Errorf("time to live: granted %d remaining %d keys %q, want 3, 0..3, [lease/expiring]", ttl.GrantedTTL, ttl.TTL, ttl.Keys)
		}
		if kv := mustGet(t, cli, "lease/expiring"); len(kv.Kvs) != 1 || kv.Kvs[0].Lease != int64(grant.ID) {
			t.Errorf("key's lease: %v, want %x", kv.Kvs, grant.ID)
		}
		leases, err := cli.Leases(ctxTimeout(t))
		if err != nil {
			t.Fatalf("leases: %v", err)
		}
		if !hasLease(leases.Leases, grant.ID) {
			t.Errorf("leases %v do not list %x", leases.Leases, grant.ID)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		wch := cli.Watch(ctx, "lease/expiring", clientv3.WithRev(put.Header.Revision+1))

		// Expiry deletes the key; the watcher sees the deletion.
		evs := collectEvents(t, wch, 1)
		if evs[0].Type != mvccpb.DELETE || string(evs[0].Kv.Key) != "lease/expiring" {
			t.Errorf("event at expiry: %s, want DELETE lease/expiring", eventString(evs[0]))
		}
		if got := mustGet(t, cli, "lease/expiring"); got.Count != 0 {
			t.Errorf("key still there after its lease expired: %v", got.Kvs)
		}
		ttl, err = cli.TimeToLive(ctxTimeout(t), grant.ID)
		if err != nil {
			t.Fatalf("time to live: %v", err)
		}
		if ttl.TTL != -1 {
			t.Errorf("time to live of an expired lease: %d, want -1", ttl.TTL)
		}
	})

	t.Run("KeepAlive", func(t *testing.T) {
		const ttlSeconds = 3
		grantedAt := time.Now()
		grant, err := cli.Grant(ctxTimeout(t), ttlSeconds)
		if err != nil {
			t.Fatalf("grant: %v", err)
		}
		if _, err := cli.Put(ctxTimeout(t), "lease/kept", "v", clientv3.WithLease(grant.ID)); err != nil {
			t.Fatalf("put with lease: %v", err)
		}
		kctx, kcancel := context.WithCancel(context.Background())
		defer kcancel()
		kch, err := cli.KeepAlive(kctx, grant.ID)
		if err != nil {
			t.Fatalf("keepalive: %v", err)
		}
		// Keep the lease alive for three TTLs: without the keepalives the
		// key would be gone well before.
		responses := 0
		for time.Since(grantedAt) < 3*ttlSeconds*time.Second {
			select {
			case resp, ok := <-kch:
				if !ok {
					t.Fatalf("keepalive channel closed after %d responses", responses)
				}
				if resp.ID != grant.ID || resp.TTL != ttlSeconds {
					t.Errorf("keepalive response: id %x ttl %d, want %x %d", resp.ID, resp.TTL, grant.ID, ttlSeconds)
				}
				responses++
			case <-time.After(waitTimeout):
				t.Fatalf("no keepalive response for %v", waitTimeout)
			}
		}
		if responses < 2 {
			t.Errorf("%d keepalive responses over three TTLs, want several", responses)
		}
		if got := mustGet(t, cli, "lease/kept"); got.Count != 1 {
			t.Fatalf("key of a kept-alive lease is gone after %v", time.Since(grantedAt))
		}
		// Stop the keepalives: the lease now expires.
		kcancel()
		waitFor(t, "key of the abandoned lease to expire", func() (bool, string) {
			got, err := cli.Get(ctxTimeout(t), "lease/kept")
			if err != nil {
				return false, err.Error()
			}
			return got.Count == 0, fmt.Sprintf("count %d", got.Count)
		})
	})

	t.Run("Revoke", func(t *testing.T) {
		grant, err := cli.Grant(ctxTimeout(t), 60)
		if err != nil {
			t.Fatalf("grant: %v", err)
		}
		for _, k := range []string{"lease/r1", "lease/r2"} {
			if _, err := cli.Put(ctxTimeout(t), k, "v", clientv3.WithLease(grant.ID)); err != nil {
				t.Fatalf("put with lease: %v", err)
			}
		}
		if _, err := cli.Revoke(ctxTimeout(t), grant.ID); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		if got := mustGet(t, cli, "lease/r", clientv3.WithPrefix()); got.Count != 0 {
			t.Errorf("keys of a revoked lease still there: %v", kvKeys(got.Kvs))
		}
		if _, err := cli.Revoke(ctxTimeout(t), grant.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			t.Errorf("revoking again: err %v, want %v", err, rpctypes.ErrLeaseNotFound)
		}
		if _, err := cli.Put(ctxTimeout(t), "lease/r3", "v", clientv3.WithLease(grant.ID)); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			t.Errorf("put with a revoked lease: err %v, want %v", err, rpctypes.ErrLeaseNotFound)
		}
	})
}

func TestClientWatch(t *testing.T) {
	c := newCluster(t, 3)
	writer := c.client(t, c.members[0].clientURL)
	// The watcher is on another member than the writer: events must travel.
	watcher := c.client(t, c.members[2].clientURL)

	var keyEvents []*clientv3.Event
	t.Run("Key", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		wch := watcher.Watch(ctx, "w/key", clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
		created := <-wch
		if !created.Created || created.Err() != nil {
			t.Fatalf("first watch response: created %v err %v, want created", created.Created, created.Err())
		}
		put1, err := writer.Put(ctxTimeout(t), "w/key", "1")
		if err != nil {
			t.Fatalf("put: %v", err)
		}
		if _, err := writer.Put(ctxTimeout(t), "w/other", "x"); err != nil {
			t.Fatalf("put: %v", err)
		}
		put2, err := writer.Put(ctxTimeout(t), "w/key", "2")
		if err != nil {
			t.Fatalf("put: %v", err)
		}
		del, err := writer.Delete(ctxTimeout(t), "w/key")
		if err != nil {
			t.Fatalf("delete: %v", err)
		}
		evs := collectEvents(t, wch, 3)
		want := []string{
			fmt.Sprintf("PUT w/key=1 create=%d mod=%d ver=1 prev=<none>", put1.Header.Revision, put1.Header.Revision),
			fmt.Sprintf("PUT w/key=2 create=%d mod=%d ver=2 prev=1", put1.Header.Revision, put2.Header.Revision),
			fmt.Sprintf("DELETE w/key= create=0 mod=%d ver=0 prev=2", del.Header.Revision),
		}
		for i := range want {
			if got := eventString(evs[i]); got != want[i] {
				t.Errorf("event %d: %s, want %s", i, got, want[i])
			}
		}
		keyEvents = evs
	})

	t.Run("Prefix", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		wch := watcher.Watch(ctx, "wp/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		if created := <-wch; !created.Created {
			t.Fatalf("first watch response is not the creation: %+v", created)
		}
		for _, kv := range [][2]string{{"wp/a", "1"}, {"wpx", "outside"}, {"wp/b", "2"}} {
			if _, err := writer.Put(ctxTimeout(t), kv[0], kv[1]); err != nil {
				t.Fatalf("put: %v", err)
			}
		}
		del, err := writer.Delete(ctxTimeout(t), "wp/", clientv3.WithPrefix())
		if err != nil {
			t.Fatalf("delete: %v", err)
		}
		evs := collectEvents(t, wch, 4)
		var got []string
		for _, ev := range evs {
			got = append(got, fmt.Sprintf("%s %s", ev.Type, ev.Kv.Key))
		}
		if fmt.Sprint(got) != "[PUT wp/a PUT wp/b DELETE wp/a DELETE wp/b]" {
			t.Errorf("prefix events: %v, want [PUT wp/a PUT wp/b DELETE wp/a DELETE wp/b]", got)
		}
		// One delete of a range is one revision for all its events.
		if evs[2].Kv.ModRevision != del.Header.Revision || evs[3].Kv.ModRevision != del.Header.Revision {
			t.Errorf("range delete events at revisions %d and %d, want both %d", evs[2].Kv.ModRevision, evs[3].Kv.ModRevision, del.Header.Revision)
		}
	})

	t.Run("FromOldRevision", func(t *testing.T) {
		if len(keyEvents) != 3 {
			t.Skip("needs the events of the Key subtest")
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		wch := watcher.Watch(ctx, "w/key", clientv3.WithPrevKV(), clientv3.WithRev(keyEvents[0].Kv.ModRevision))
		evs := collectEvents(t, wch, 3)
		for i := range evs {
			if got, want := eventString(evs[i]), eventString(keyEvents[i]); got != want {
				t.Errorf("replayed event %d: %s, want %s", i, got, want)
			}
		}
	})
}

// wantSameHashKV checks that every member hashes its key-value history to
// the same value at one revision.
func wantSameHashKV(t *testing.T, c *e2eCluster, cli *clientv3.Client) {
	t.Helper()
	rev := mustGet(t, cli, "hashkv-probe").Header.Revision
	hashes := map[uint32][]string{}
	for _, m := range c.members {
		// HashKV reads the member's own store: wait until it has applied rev.
		waitApplied(t, c.client(t, m.clientURL), m.name, rev)
		resp, err := cli.HashKV(ctxTimeout(t), m.clientURL, rev)
		if err != nil {
			t.Fatalf("hashkv of %s at %d: %v", m.name, rev, err)
		}
		hashes[resp.Hash] = append(hashes[resp.Hash], m.name)
	}
	if len(hashes) != 1 {
		t.Errorf("members disagree on hashkv at revision %d: %v", rev, hashes)
	}
}

// waitApplied polls a one-member client with serializable reads until that
// member has applied revision rev.
func waitApplied(t *testing.T, cli *clientv3.Client, name string, rev int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("member %s to apply revision %d", name, rev), func() (bool, string) {
		resp, err := cli.Get(ctxTimeout(t), "applied-probe", clientv3.WithSerializable())
		if err != nil {
			return false, err.Error()
		}
		return resp.Header.Revision >= rev, fmt.Sprintf("at revision %d", resp.Header.Revision)
	})
}

// wantRawRangeError sends a Range at rev straight through gRPC, without the
// client library's error mapping, and checks the status etcd sends.
func wantRawRangeError(t *testing.T, cli *clientv3.Client, key string, rev int64, code codes.Code, text string) {
	t.Helper()
	kv := etcdserverpb.NewKVClient(cli.ActiveConnection())
	_, err := kv.Range(ctxTimeout(t), &etcdserverpb.RangeRequest{Key: []byte(key), Revision: rev})
	st, _ := status.FromError(err)
	if st.Code() != code || st.Message() != text {
		t.Errorf("raw range of %s at %d: status %v %q, want %v %q", key, rev, st.Code(), st.Message(), code, text)
	}
}

func mustGet(t *testing.T, cli *clientv3.Client, key string, opts ...clientv3.OpOption) *clientv3.GetResponse {
	t.Helper()
	resp, err := cli.Get(ctxTimeout(t), key, opts...)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return resp
}

func wantKV(t *testing.T, resp *clientv3.GetResponse, key, value string, createRev, modRev, version int64) {
	t.Helper()
	if resp.Count != 1 || len(resp.Kvs) != 1 {
		t.Errorf("get %s: count %d kvs %v, want one", key, resp.Count, resp.Kvs)
		return
	}
	kv := resp.Kvs[0]
	if string(kv.Key) != key || string(kv.Value) != value || kv.CreateRevision != createRev || kv.ModRevision != modRev || kv.Version != version {
		t.Errorf("get %s: %s=%s create %d mod %d version %d, want %s=%s create %d mod %d version %d",
			key, kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, key, value, createRev, modRev, version)
	}
}

func kvKeys(kvs []*mvccpb.KeyValue) []string {
	var keys []string
	for _, kv := range kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

func hasLease(leases []clientv3.LeaseStatus, id clientv3.LeaseID) bool {
	for _, l := range leases {
		if l.ID == id {
			return true
		}
	}
	return false
}

// collectEvents reads n events from a watch, failing on a closed channel, an
// error or waitTimeout without them.
func collectEvents(t *testing.T, wch clientv3.WatchChan, n int) []*clientv3.Event {
	t.Helper()
	var evs []*clientv3.Event
	timeout := time.After(waitTimeout)
	for len(evs) < n {
		select {
		case resp, ok := <-wch:
			if !ok {
				t.Fatalf("watch closed after %d of %d events", len(evs), n)
			}
			if err := resp.Err(); err != nil {
				t.Fatalf("watch error after %d of %d events: %v", len(evs), n, err)
			}
			evs = append(evs, resp.Events...)
		case <-timeout:
			t.Fatalf("%d of %d watch events after %v", len(evs), n, waitTimeout)
		}
	}
	if len(evs) > n {
		t.Errorf("watch gave %d events, want %d: extra %s", len(evs), n, eventString(evs[n]))
	}
	return evs
}

func eventString(ev *clientv3.Event) string {
	prev := "<none>"
	if ev.PrevKv != nil {
		prev = string(ev.PrevKv.Value)
	}
	return fmt.Sprintf("%s %s=%s create=%d mod=%d ver=%d prev=%s", ev.Type, ev.Kv.Key, ev.Kv.Value, ev.Kv.CreateRevision, ev.Kv.ModRevision, ev.Kv.Version, prev)
}

// waitFor polls cond until it holds, failing with its last description after
// waitTimeout.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	var last string
	for {
		ok, desc := cond()
		if ok {
			return
		}
		last = desc
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last: %s", waitTimeout, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sortedStrings returns a sorted copy, for comparing sets printed in any order.
func sortedStrings(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/protobuf/proto"
)

// TestLockServiceAndRecipeSeeEachOther takes one lock name in turns through
// the Lock service (gRPC and JSON) and through client/v3/concurrency's
// Mutex: each waits while the other holds it, and the holders' keys are
// ordered by create revision, the fencing token.
func TestLockServiceAndRecipeSeeEachOther(t *testing.T) {
	tms := startCluster(t, 3)
	c := newClient(t, tms[1])
	ctx := testContext(t)
	lockc := v3lockpb.NewLockClient(c.ActiveConnection())

	// The service holds it first.
	lease1, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	held1, err := lockc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("/locks/a"), Lease: int64(lease1.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("/locks/a/%x", lease1.ID); string(held1.Key) != want {
		t.Fatalf("lock key %q, want %q", held1.Key, want)
	}
	// The recipe waits for it.
	sess, err := concurrency.NewSession(c, concurrency.WithTTL(60))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	mu := concurrency.NewMutex(sess, "/locks/a")
	if err := mu.TryLock(ctx); err != concurrency.ErrLocked {
		t.Fatalf("recipe TryLock while the service holds the lock: %v, want ErrLocked", err)
	}
	recipeHeld := make(chan error, 1)
	go func() { recipeHeld <- mu.Lock(ctx) }()
	select {
	case err := <-recipeHeld:
		t.Fatalf("recipe Lock returned %v while the service holds the lock", err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := lockc.Unlock(ctx, &v3lockpb.UnlockRequest{Key: held1.Key}); err != nil {
		t.Fatal(err)
	}
	if err := <-recipeHeld; err != nil {
		t.Fatal(err)
	}
	// Now the JSON path waits for the recipe.
	lease2, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	type lockReply struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
		Key string `json:"key"`
	}
	jsonHeld := make(chan lockReply, 1)
	go func() {
		code, _, body := httpDo(t, "POST", tms[2].clientURL+"/v3/lock/lock",
			fmt.Sprintf(`{"name":%q,"lease":"%d"}`, base64.StdEncoding.EncodeToString([]byte("/locks/a")), lease2.ID))
		var r lockReply
		if code != 200 || json.Unmarshal([]byte(body), &r) != nil {
			t.Errorf("/v3/lock/lock: %d %s", code, body)
		}
		jsonHeld <- r
	}()
	select {
	case r := <-jsonHeld:
		t.Fatalf("/v3/lock/lock answered %+v while the recipe holds the lock", r)
	case <-time.After(300 * time.Millisecond):
	}
	if err := mu.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-jsonHeld
	key, _ := base64.StdEncoding.DecodeString(r.Key)
	if want := fmt.Sprintf("/locks/a/%x", lease2.ID); string(key) != want {
		t.Fatalf("JSON lock key %q, want %q", key, want)
	}
	got, err := c.Get(ctx, string(key))
	if err != nil || len(got.Kvs) != 1 {
		t.Fatalf("the JSON holder's key: %v %v", got, err)
	}
	if got.Kvs[0].CreateRevision <= held1.Header.Revision {
		t.Errorf("fencing tokens not increasing: first holder's revision %d, third holder's %d", held1.Header.Revision, got.Kvs[0].CreateRevision)
	}
	code, _, body := httpDo(t, "POST", tms[2].clientURL+"/v3/lock/unlock", fmt.Sprintf(`{"key":%q}`, r.Key))
	if code != 200 || !strings.Contains(body, `"header"`) {
		t.Fatalf("/v3/lock/unlock: %d %s", code, body)
	}
	if got, _ := c.Get(ctx, "/locks/a", clientv3.WithPrefix()); len(got.Kvs) != 0 {
		t.Fatalf("keys left under the lock after every holder unlocked: %v", got.Kvs)
	}
}

// TestLockPassesWhenTheHolderLeaseExpires: a holder that stops keeping its
// lease alive (a crashed process) loses the lock when the lease expires,
// and the waiter gets it.
func TestLockPassesWhenTheHolderLeaseExpires(t *testing.T) {
	tms := startCluster(t, 1)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	lockc := v3lockpb.NewLockClient(c.ActiveConnection())
	dying, err := c.Grant(ctx, 2) // never kept alive
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("job"), Lease: int64(dying.ID)}); err != nil {
		t.Fatal(err)
	}
	sess, err := concurrency.NewSession(c, concurrency.WithTTL(60))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	waiter, err := lockc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("job"), Lease: int64(sess.Lease())})
	if err != nil {
		t.Fatal(err)
	}
	if ttl, err := c.TimeToLive(ctx, dying.ID); err != nil || ttl.TTL != -1 {
		t.Fatalf("the waiter got the lock while the holder's lease lives: TTL %v, %v", ttl.TTL, err)
	}
	if want := fmt.Sprintf("job/%x", sess.Lease()); string(waiter.Key) != want {
		t.Fatalf("waiter's key %q, want %q", waiter.Key, want)
	}
	// A lease that does not exist is etcd's LeaseNotFound, code and text.
	_, err = lockc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("job2"), Lease: 12345})
	if err == nil || !strings.Contains(err.Error(), "requested lease not found") {
		t.Fatalf("Lock on a missing lease: %v", err)
	}
}

// TestElectionServiceAndRecipeSeeEachOther campaigns through the service
// and through client/v3/concurrency for one election: Leader, Observe and
// the JSON paths agree on who leads, and leadership passes on Resign.
func TestElectionServiceAndRecipeSeeEachOther(t *testing.T) {
	tms := startCluster(t, 3)
	c := newClient(t, tms[0])
	ctx := testContext(t)
	elc := v3electionpb.NewElectionClient(c.ActiveConnection())

	obsCtx, cancelObs := context.WithCancel(ctx)
	defer cancelObs()
	obs, err := elc.Observe(obsCtx, &v3electionpb.LeaderRequest{Name: []byte("/election/x")})
	if err != nil {
		t.Fatal(err)
	}
	lease, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	camp, err := elc.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("/election/x"), Lease: int64(lease.ID), Value: []byte("svc-1")})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := obs.Recv(); err != nil || string(first.Kv.Value) != "svc-1" {
		t.Fatalf("Observe first: %v %v", first, err)
	}
	if _, err := elc.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: camp.Leader, Value: []byte("svc-2")}); err != nil {
		t.Fatal(err)
	}
	if next, err := obs.Recv(); err != nil || string(next.Kv.Value) != "svc-2" {
		t.Fatalf("Observe after Proclaim: %v %v", next, err)
	}
	// The recipe sees the service's leader and queues behind it.
	sess, err := concurrency.NewSession(c, concurrency.WithTTL(60))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, "/election/x")
	if l, err := el.Leader(ctx); err != nil || string(l.Kvs[0].Value) != "svc-2" {
		t.Fatalf("recipe Leader: %v %v", l, err)
	}
	campaigned := make(chan error, 1)
	go func() { campaigned <- el.Campaign(ctx, "recipe") }()
	select {
	case err := <-campaigned:
		t.Fatalf("recipe campaign won (%v) while the service's candidate leads", err)
	case <-time.After(300 * time.Millisecond):
	}
	code, _, body := httpDo(t, "POST", tms[1].clientURL+"/v3/election/leader",
		fmt.Sprintf(`{"name":%q}`, base64.StdEncoding.EncodeToString([]byte("/election/x"))))
	if code != 200 || !strings.Contains(body, base64.StdEncoding.EncodeToString([]byte("svc-2"))) {
		t.Fatalf("/v3/election/leader: %d %s", code, body)
	}
	// A stale leader key cannot proclaim.
	stale := proto.Clone(camp.Leader).(*v3electionpb.LeaderKey)
	stale.Rev++
	if _, err := elc.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: stale, Value: []byte("x")}); err == nil || !strings.Contains(err.Error(), "not leader") {
		t.Fatalf("Proclaim with a stale leader key: %v", err)
	}
	if _, err := elc.Proclaim(ctx, &v3electionpb.ProclaimRequest{Value: []byte("x")}); err == nil || !strings.Contains(err.Error(), `"leader" field must be provided`) {
		t.Fatalf("Proclaim without a leader key: %v", err)
	}
	if _, err := elc.Resign(ctx, &v3electionpb.ResignRequest{Leader: camp.Leader}); err != nil {
		t.Fatal(err)
	}
	if err := <-campaigned; err != nil {
		t.Fatal(err)
	}
	if next, err := obs.Recv(); err != nil || string(next.Kv.Value) != "recipe" {
		t.Fatalf("Observe after the service's leader resigned: %v %v", next, err)
	}
	l, err := elc.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("/election/x")})
	if err != nil || string(l.Kv.Value) != "recipe" {
		t.Fatalf("service Leader after the handover: %v %v", l, err)
	}
}

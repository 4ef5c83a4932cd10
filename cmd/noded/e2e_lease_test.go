package main

// A lease's promise to its holder, measured with a real clock: a client
// whose keepalive was answered may count on the lease living at least its
// TTL from when it sent the keepalive. Locks, leader keys and service
// registrations are reasoned about that way, so an expiry that comes even a
// heartbeat early can leave two holders at once.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseRounds is how many leases each cluster size renews once and watches
// expire. They run at once, their keepalives spread over a few heartbeat
// intervals, so that renewals land at every point within a tick.
const leaseRounds = 30

func TestLeaseLivesTTLAfterKeepAlive(t *testing.T) {
	for _, size := range []int{1, 3} {
		t.Run(fmt.Sprintf("members=%d", size), func(t *testing.T) {
			c := newCluster(t, size)
			cli := c.client(t)
			var wg sync.WaitGroup
			lived := make([]time.Duration, leaseRounds)
			errs := make([]error, leaseRounds)
			for i := range leaseRounds {
				wg.Add(1)
				go func() {
					defer wg.Done()
					lived[i], errs[i] = leaseLifeAfterKeepAlive(cli, fmt.Sprintf("lease-life/%d", i), time.Duration(i)*37*time.Millisecond)
				}()
			}
			wg.Wait()
			const ttl = leaseLifeTTLSeconds * time.Second
			shortest, longest := time.Duration(1<<63-1), time.Duration(0)
			for i := range leaseRounds {
				if errs[i] != nil {
					t.Errorf("round %d: %v", i, errs[i])
					continue
				}
				shortest, longest = min(shortest, lived[i]), max(longest, lived[i])
				if lived[i] < ttl {
					t.Errorf("round %d: the attached key was gone %v after the keepalive was sent, before the TTL of %v", i, lived[i], ttl)
				}
			}
			t.Logf("%d leases of TTL %v: life after the keepalive was sent %v to %v", leaseRounds, ttl, shortest, longest)
		})
	}
}

// leaseLifeTTLSeconds is the smallest TTL a member with the default 1 s
// election timeout grants (etcd's minimum, 1.5 election timeouts).
const leaseLifeTTLSeconds = 2

// leaseLifeAfterKeepAlive grants a lease, attaches key to it, waits delay
// plus a random part of a heartbeat, renews it once, and returns how long
// after sending that keepalive the client saw the key deleted. The time is
// taken before the keepalive is sent and after the deletion arrives, so it
// can only overstate the lease's life, never understate it.
func leaseLifeAfterKeepAlive(cli *clientv3.Client, key string, delay time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	grant, err := cli.Grant(ctx, leaseLifeTTLSeconds)
	if err != nil {
		return 0, fmt.Errorf("grant: %w", err)
	}
	put, err := cli.Put(ctx, key, "v", clientv3.WithLease(grant.ID))
	if err != nil {
		return 0, fmt.Errorf("put: %w", err)
	}
	wch := cli.Watch(ctx, key, clientv3.WithRev(put.Header.Revision+1))
	time.Sleep(delay + time.Duration(rand.Int64N(int64(100*time.Millisecond))))
	sent := time.Now()
	ka, err := cli.KeepAliveOnce(ctx, grant.ID)
	if err != nil {
		return 0, fmt.Errorf("keepalive: %w", err)
	}
	if ka.TTL <= 0 {
		return 0, fmt.Errorf("keepalive answered TTL %d: the lease expired before it was renewed", ka.TTL)
	}
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return 0, fmt.Errorf("watch: %w", err)
		}
		for _, ev := range resp.Events {
			if ev.Type == mvccpb.DELETE {
				return time.Since(sent), nil
			}
			return 0, fmt.Errorf("unexpected event %s", eventString(ev))
		}
	}
	return 0, fmt.Errorf("watch ended without the key's deletion: %v", ctx.Err())
}

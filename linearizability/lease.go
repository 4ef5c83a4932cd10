package linearizability

import (
	"cmp"
	"slices"
)

// checkLeases holds every leader to its own clock: it may propose the expiry
// of a lease only once the lease's TTL has passed, in its own ticks, since
// both the last time it granted or refreshed the lease and the time it
// became leader (a new leader cannot know of keepalives its predecessor
// acknowledged, so it must give every lease a full TTL). Ticks of different
// members are not comparable, so each member is judged on its own events.
// The other half of lease safety, that nothing outlives a revoke and no
// write attaches a dead lease, is checked against the replay by the read,
// watch and durability checks.
func (run *checkRun) checkLeases() {
	events := run.in.Leases
	run.stats.LeaseEvents = len(events)
	// The TTL a lease was last granted or refreshed with, by any member: the
	// fallback for a leader that never saw the grant itself. The smallest is
	// kept, so a fallback never makes the rule stricter than some member's
	// own view.
	ttlAnywhere := map[int64]int64{}
	for _, e := range events {
		if e.Kind == LeaseGranted || e.Kind == LeaseKeepAliveAcked || e.Kind == LeaseTakenOver {
			if ttl, ok := ttlAnywhere[e.Lease]; !ok || e.TTLTicks < ttl {
				ttlAnywhere[e.Lease] = e.TTLTicks
			}
		}
	}
	order := make([]int, len(events))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(events[a].Member, events[b].Member), cmp.Compare(events[a].LocalTick, events[b].LocalTick))
	})
	type leaderView struct {
		becameLeader *LeaseEvent
		refreshed    map[int64]*LeaseEvent // last Granted, KeepAliveAcked or TakenOver per lease
	}
	views := map[uint64]*leaderView{}
	for _, i := range order {
		e := &events[i]
		v := views[e.Member]
		if v == nil {
			v = &leaderView{refreshed: map[int64]*LeaseEvent{}}
			views[e.Member] = v
		}
		switch e.Kind {
		case LeaseBecameLeader:
			v.becameLeader = e
		case LeaseGranted, LeaseKeepAliveAcked, LeaseTakenOver:
			v.refreshed[e.Lease] = e
		case LeaseExpiryProposed:
			run.checkExpiry(e, v.becameLeader, v.refreshed[e.Lease], ttlAnywhere)
		default:
			run.report.add(checkerHistory, "lease event %s has an unknown kind", e)
		}
	}
}

func (run *checkRun) checkExpiry(e, becameLeader, refreshed *LeaseEvent, ttlAnywhere map[int64]int64) {
	if becameLeader == nil {
		run.report.add(checkerLeaseExpiry, "%s: member %x proposed an expiry without having become leader", e, e.Member)
	}
	ttl, known := ttlAnywhere[e.Lease]
	if refreshed != nil {
		ttl, known = refreshed.TTLTicks, true
		if e.LocalTick < refreshed.LocalTick+refreshed.TTLTicks {
			run.report.add(checkerLeaseExpiry, "%s: lease expired early: the member last saw it at %s, so it lives until tick %d",
				e, refreshed, refreshed.LocalTick+refreshed.TTLTicks)
		}
	}
	if !known {
		run.report.add(checkerLeaseExpiry, "%s: expiry of a lease no member reported granting", e)
		return
	}
	if becameLeader != nil && e.LocalTick < becameLeader.LocalTick+ttl {
		run.report.add(checkerLeaseExpiry, "%s: lease expired early: the member became leader at tick %d and must give the lease its full TTL of %d ticks (until tick %d; election timeout %d ticks)",
			e, becameLeader.LocalTick, ttl, becameLeader.LocalTick+ttl, becameLeader.ElectionTicks)
	}
}

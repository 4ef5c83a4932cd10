package linearizability

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// checkLeases holds every leader to its own clock: it may propose the expiry
// of a lease only once the lease's TTL has passed, in its own ticks, since
// both the last time it granted or refreshed the lease and the time it
// became leader, counted from the tick after (the renewal arrived during
// its tick, so the TTL runs from the next tick boundary) (a new leader cannot know of keepalives its predecessor
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
		if until := refreshed.LocalTick + refreshed.TTLTicks + 1; e.LocalTick < until {
			run.report.add(checkerLeaseExpiry, "%s: lease expired early: the member last saw it at %s, so it lives until tick %d",
				e, refreshed, until)
		}
	}
	if !known {
		run.report.add(checkerLeaseExpiry, "%s: expiry of a lease no member reported granting", e)
		return
	}
	if becameLeader == nil {
		return
	}
	if until := becameLeader.LocalTick + ttl + 1; e.LocalTick < until {
		run.report.add(checkerLeaseExpiry, "%s: lease expired early: the member became leader at tick %d and must give the lease its full TTL of %d ticks (until tick %d; election timeout %d ticks)",
			e, becameLeader.LocalTick, ttl, until, becameLeader.ElectionTicks)
	}
}

// checkLeaseTimes holds expiries to what a client was promised, in true
// time rather than ticks: a client whose grant or keepalive was answered
// with a live lease may count on the lease living TTL from when it sent
// the request. The earliest any client can see the lease gone (its keys
// missing from a read, a delete event on a watch) is when the first member
// applies the expiry's revoke, so that is what is judged: it must come no
// earlier than TTL after the send time of every answered renewal sent
// before it. Ticks hide errors of less than a tick; this does not.
//
// A leader whose clock runs fast ends a TTL early in true time; the
// allowance for that is Clocks.ShortestSecondNs. A renewal whose TTL spans
// a clock fault (a jump, a stall) is not judged, and nor is any lease when
// the clocks' rate is unknown.
func (run *checkRun) checkLeaseTimes() {
	second := run.in.Clocks.ShortestSecondNs
	if second <= 0 {
		return
	}
	type renewal struct {
		what       string
		client     int
		sent       int64
		ttlSeconds int64
		deadlineNs int64
	}
	renewals := map[int64][]renewal{} // lease ID -> renewals in no particular order; lookups only
	add := func(what string, client int, lease, sent, ttlSeconds int64) {
		if ttlSeconds <= 0 {
			return
		}
		// The TTL in true time at the fastest clock.
		life := int64(math.MaxInt64 - sent)
		if ttlSeconds < life/second {
			life = ttlSeconds * second
		}
		renewals[lease] = append(renewals[lease], renewal{what: what, client: client, sent: sent, ttlSeconds: ttlSeconds, deadlineNs: sent + life})
	}
	for _, op := range run.ops {
		g := op.original.Response.LeaseGrant
		if op.original.Request.LeaseGrant == nil || op.ret == Unknown || op.original.Response.Err != nil || g == nil {
			continue
		}
		add("grant", op.client, g.GetID(), op.call, g.GetTTL())
	}
	for _, ka := range run.in.KeepAlives {
		add("keepalive", ka.Client, ka.Lease, ka.Sent, ka.TTLSeconds)
	}
	// The earliest time a client sent a revoke of each lease. A revoke in
	// the log that no client operation claims may still be a client's: a
	// client library that lost the answer to its first attempt (a member
	// killed under it) sends the request again, the first copy commits
	// and the retry's LeaseNotFound is what the client learns and claims.
	// No promise holds past a revoke the client itself sent.
	clientRevokeSent := map[int64]int64{} // lease ID -> earliest send; lookups only
	for _, op := range run.ops {
		rq := op.original.Request.LeaseRevoke
		if rq == nil {
			continue
		}
		if t, ok := clientRevokeSent[rq.GetID()]; !ok || op.call < t {
			clientRevokeSent[rq.GetID()] = op.call
		}
	}
	revoked := map[int64]bool{} // lookups only
	for _, e := range run.in.Committed {
		rv := e.Request.GetLeaseRevoke()
		if rv == nil || revoked[rv.GetID()] {
			continue
		}
		revoked[rv.GetID()] = true
		if op := run.byID[e.RequestID]; op != nil && op.original.Request.LeaseRevoke != nil {
			continue // a client revoked it: no promise holds past that
		}
		if sent, ok := clientRevokeSent[rv.GetID()]; ok && sent < e.AppliedAt {
			continue // a client had asked for the end before it applied
		}
		if e.AppliedAt <= 0 {
			continue
		}
		var worst *renewal
		for i, r := range renewals[rv.GetID()] {
			if r.sent >= e.AppliedAt || e.AppliedAt >= r.deadlineNs || run.clockFaultBetween(r.sent, e.AppliedAt) {
				continue
			}
			if worst == nil || r.deadlineNs > worst.deadlineNs {
				worst = &renewals[rv.GetID()][i]
			}
		}
		if worst != nil {
			run.report.add(checkerLeaseTime, "lease %d expired at %s (its revoke applied at raft index %d), %s before the TTL of %ds from the %s client %d sent at %s ran out (%s a second at the fastest member clock)",
				rv.GetID(), fmtNs(e.AppliedAt), e.Index, fmtNs(worst.deadlineNs-e.AppliedAt), worst.ttlSeconds, worst.what, worst.client, fmtNs(worst.sent), fmtNs(second))
		}
	}
}

// clockFaultBetween reports a clock fault overlapping [from, to].
func (run *checkRun) clockFaultBetween(from, to int64) bool {
	for _, f := range run.in.Clocks.Faults {
		if f.From <= to && f.To >= from {
			return true
		}
	}
	return false
}

// fmtNs renders virtual nanoseconds as milliseconds, to the nanosecond.
func fmtNs(ns int64) string {
	return fmt.Sprintf("%d.%06dms", ns/1e6, ns%1e6)
}

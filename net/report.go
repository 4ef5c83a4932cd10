package net

import (
	"context"
	"slices"
	"sync"
	"time"
)

// pendingReportsMax bounds the peers with a report waiting for the reporter
// goroutine. Reports are only made for known peers, so this is an
// assertion more than a limit.
const pendingReportsMax = 1024

// reporter delivers ReportUnreachable and ReportSnapshot on a goroutine of
// its own. Send must never call into the Handler (the caller is the member
// loop the Handler feeds, and it may be waiting on Send), and a burst of
// drops to one peer needs one report, not thousands: pending reports are
// coalesced per peer.
type reporter struct {
	handler Handler
	wake    chan struct{} // capacity 1: "something is pending"

	mu          sync.Mutex
	unreachable map[uint64]struct{}
	snapshots   map[uint64]bool // peer -> failed; one snapshot per peer is in flight
}

func newReporter(h Handler) *reporter {
	return &reporter{
		handler:     h,
		wake:        make(chan struct{}, 1),
		unreachable: map[uint64]struct{}{},
		snapshots:   map[uint64]bool{},
	}
}

func (r *reporter) reportUnreachable(id uint64) {
	r.mu.Lock()
	_, pending := r.unreachable[id]
	if !pending && len(r.unreachable) < pendingReportsMax {
		r.unreachable[id] = struct{}{}
	}
	r.mu.Unlock()
	if !pending {
		r.notify()
	}
}

func (r *reporter) reportSnapshot(id uint64, failed bool) {
	r.mu.Lock()
	if len(r.snapshots) < pendingReportsMax {
		r.snapshots[id] = failed
	}
	r.mu.Unlock()
	r.notify()
}

func (r *reporter) notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run delivers pending reports until ctx ends, peers in ascending order and
// for each peer unreachable before the snapshot outcome.
func (r *reporter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
		r.mu.Lock()
		unreachable, snapshots := r.unreachable, r.snapshots
		r.unreachable, r.snapshots = map[uint64]struct{}{}, map[uint64]bool{}
		r.mu.Unlock()

		ids := append(mapKeys(unreachable), mapKeys(snapshots)...)
		slices.Sort(ids)
		ids = slices.Compact(ids)
		for _, id := range ids {
			if ctx.Err() != nil {
				return
			}
			if _, ok := unreachable[id]; ok {
				r.handler.ReportUnreachable(id)
			}
			if failed, ok := snapshots[id]; ok {
				r.handler.ReportSnapshot(id, failed)
			}
		}
	}
}

const (
	// refusalLogInterval repeats the log line for a refusal that keeps
	// happening (a misconfigured member redials every BackoffMax).
	refusalLogInterval = 30 * time.Second
	// refusalLogKeysMax bounds the refusals remembered for rate limiting.
	refusalLogKeysMax = 64
)

// refusalLog rate-limits the log line for refused inbound streams: the
// first of a kind is logged, repeats once per refusalLogInterval.
type refusalLog struct {
	mu     sync.Mutex
	logged map[string]time.Time
}

// shouldLog reports whether a refusal with this key is due to be logged.
func (l *refusalLog) shouldLog(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if last, ok := l.logged[key]; ok && now.Sub(last) < refusalLogInterval {
		return false
	}
	if l.logged == nil || len(l.logged) >= refusalLogKeysMax {
		l.logged = map[string]time.Time{}
	}
	l.logged[key] = now
	return true
}

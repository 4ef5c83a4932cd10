package linearizability

import (
	"strings"
)

// checkerLockFencing names the lock checker in failures.
const checkerLockFencing = "lock-fencing"

// Lock is one lock of the workload, taken as client/v3/concurrency's Mutex
// (and etcd's Lock service) take it: a key under Prefix per contender,
// attached to the contender's lease; the owner is the live key with the
// lowest create revision. Resource is the key the lock protects: the
// holder's writes to it carry its lock key, then FencingSeparator and
// anything else, as the value.
type Lock struct {
	Prefix   string
	Resource string
}

// FencingSeparator ends the lock key in a protected write's value.
const FencingSeparator = "#"

// checkLocks replays the committed log and checks, for every entry that
// wrote a lock's resource, that the writer held the lock when the write
// applied: its lock key was the owner in the state just before the entry.
// Holders that fence (a txn comparing their key's create revision) can
// only write while they own the lock, whatever crashes, partitions and
// pauses do to their view of it; a holder that writes without the guard
// after its lease expired (a pause, a partition) is caught here. This is
// the "no two clients hold one lock at once" property stated where it
// matters: on what the lock protects.
func (run *checkRun) checkLocks() {
	for _, l := range run.in.Locks {
		for _, e := range run.replay.entries {
			after, ok := e.after.get(l.Resource)
			if !ok || e.after.revision == e.before.revision || after.modRevision != e.after.revision {
				continue // the entry did not write the resource
			}
			holder, _, _ := strings.Cut(after.value, FencingSeparator)
			owner, held := lockOwner(e.before, l.Prefix)
			switch {
			case !held:
				run.report.add(checkerLockFencing, "%s written at revision %d (raft index %d) by holder %s while nobody held lock %s",
					quote(l.Resource), e.after.revision, e.index, quote(holder), quote(l.Prefix))
			case owner.key != holder:
				run.report.add(checkerLockFencing, "%s written at revision %d (raft index %d) by holder %s while %s held lock %s",
					quote(l.Resource), e.after.revision, e.index, quote(holder), owner, quote(l.Prefix))
			}
		}
	}
}

// lockOwner is the live key under prefix with the lowest create revision.
func lockOwner(s *state, prefix string) (keyValue, bool) {
	var owner keyValue
	found := false
	for _, kv := range s.inRange(newKeyRange([]byte(prefix), prefixRangeEnd(prefix))) {
		if !found || kv.createRevision < owner.createRevision {
			owner, found = kv, true
		}
	}
	return owner, found
}

func prefixRangeEnd(prefix string) []byte {
	end := []byte(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

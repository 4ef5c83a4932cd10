package server

// Memory the member's process gives back. The Go heap grows to twice what
// is live before a collection (GOGC=100) and keeps freed pages a while;
// after a burst of writes and a compaction most of it is garbage that
// nothing will collect until the next burst, or the runtime's two-minute
// forced collection, and even then only part of it goes back to the
// system. A member that has been idle a while collects and returns it
// all at once (runtime/debug.FreeOSMemory), so an idle member's resident
// memory is what it holds, not what it once allocated. Before that it
// repacks the store (kvsm.Repacker) a step at a time on the member loop,
// and raft's kept log entries (node.RepackLog), so that the holes the
// collected garbage left between them become whole free spans the release
// can return. The collection runs on a
// goroutine of its own; the member loop never waits for it.

import (
	"context"
	"runtime/debug"
	"time"

	"github.com/noded/noded/kvsm"
)

const (
	// idleReleaseCheckEvery is how often the release goroutine looks at the
	// member's activity.
	idleReleaseCheckEvery = time.Second
	// repackKeysPerStep bounds the keys one repack step moves on the
	// member loop (a few milliseconds), so that a request arriving during
	// a repack waits at most that long.
	repackKeysPerStep = 4096
	// repackStepsMax bounds the steps of one repack (a billion keys).
	repackStepsMax = 1 << 18
)

// releaseMemoryWhenIdle runs until the member stops: once the applied
// index and the revision have not moved for idleAfter, after they moved
// since the last release, it frees the heap's garbage and returns the
// free pages to the system. It runs at most once per idle period.
func (m *Member) releaseMemoryWhenIdle(idleAfter time.Duration) {
	ticker := time.NewTicker(idleReleaseCheckEvery)
	defer ticker.Stop()
	// Every write, compaction and snapshot install moves the applied
	// index: it alone tells activity from idleness.
	var lastApplied uint64
	lastChange := time.Now()
	released := false
	for {
		select {
		case <-m.stopLoop:
			return
		case now := <-ticker.C:
			st := m.state.Load()
			if st == nil {
				continue
			}
			if applied := st.status.AppliedIndex; applied != lastApplied {
				lastApplied = applied
				lastChange = now
				released = false
				continue
			}
			if !released && now.Sub(lastChange) >= idleAfter {
				released = true
				if !m.repackStore() {
					return
				}
				debug.FreeOSMemory()
				m.idleReleases.Add(1)
			}
		}
	}
}

// repackStore repacks the whole store a step at a time on the member loop
// and reports false if the member stopped meanwhile. Requests that arrive
// between steps are served between them.
func (m *Member) repackStore() bool {
	var r kvsm.Repacker
	done := false
	for step := 0; !done && step < repackStepsMax; step++ {
		err := m.call(context.Background(), func() {
			done = m.node.RepackStep(&r, repackKeysPerStep)
			// The published view holds the entries just moved: a new one
			// lets them go, so that a repack never holds the store twice.
			m.viewRepacked = true
		})
		if err != nil {
			return false
		}
	}
	m.repackedKeys.Add(uint64(r.KeysRepacked()))
	// Raft's kept log entries pin spans the same way (node.RepackLog);
	// copying a few thousand entries is one short call.
	if err := m.call(context.Background(), func() { m.repackedLog.Add(uint64(m.node.RepackLog())) }); err != nil {
		return false
	}
	return true
}

// A member that opens a data directory loads its last snapshot and then
// applies the log after it: everything it allocates meanwhile is the state
// it will hold, so collecting during the load finds nothing to free and
// only costs time (a collection each time the heap doubles, each marking
// everything loaded so far). With Config.PauseGCWhileLoading the Go
// collector is off from opening the data directory until the member has
// applied what it recovered as committed; the soft memory limit still
// applies, so a load that outgrows it is collected as usual.

// gcPause turns the collector off and back on. Start, the loop and Stop
// (after the loop has ended) use it one after another, never at once.
type gcPause struct {
	prevPercent int
	until       uint64 // applied index after which the collector runs again
	active      bool   // the pause has not ended
}

func (p *gcPause) start() {
	p.prevPercent = debug.SetGCPercent(-1)
	p.active = true
}

func (p *gcPause) end() {
	if p.active {
		debug.SetGCPercent(p.prevPercent)
		p.active = false
	}
}

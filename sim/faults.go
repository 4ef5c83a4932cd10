package sim

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/noded/noded/linearizability"
)

// The fault injector strikes at random intervals during the safety phase
// (mean FaultEveryMs), each time picking one kind among those the seed
// turned on. Every fault undoes itself after a while (a partition heals, a
// crashed member restarts, a pause ends), and the liveness phase undoes
// whatever is left.

func (w *world) scheduleNextFault() {
	if w.phase != phaseSafety {
		return
	}
	at := w.now + int64(w.frng.ExpFloat64()*float64(w.k.FaultEveryMs)*1e6)
	w.q.schedule(event{at: at, kind: evFault})
}

type faultKind uint8

const (
	faultPartition faultKind = iota
	faultClog
	faultCrash
	faultPause
	faultClockJump
	faultFsyncError
	faultCorruption
	faultMembership
)

func (w *world) enabledFaults() []faultKind {
	var out []faultKind
	add := func(on bool, f faultKind) {
		if on {
			out = append(out, f)
		}
	}
	add(w.k.Partitions && w.k.ClusterSize > 1, faultPartition)
	add(w.k.Clogs && w.k.ClusterSize > 1, faultClog)
	add(w.k.Crashes, faultCrash)
	add(w.k.Pauses, faultPause)
	add(w.k.ClockJumps, faultClockJump)
	add(w.k.FsyncErrors, faultFsyncError)
	add(w.k.Corruption, faultCorruption)
	add(w.k.MembershipChanges, faultMembership)
	return out
}

func (w *world) electionNs() int64 { return int64(w.k.ElectionTicks) * w.k.TickMs * 1e6 }

// holdNs draws how long a fault lasts: between one and ten election
// timeouts, long enough to force elections and leases to matter.
func (w *world) holdNs() int64 {
	return w.electionNs() + w.frng.Int64N(9*w.electionNs()+1)
}

func (w *world) after(delay int64, what string, fn func()) {
	w.q.schedule(event{at: w.now + delay, kind: evAction, action: fn, what: what})
}

func (w *world) injectFault() {
	defer w.scheduleNextFault()
	if w.phase != phaseSafety {
		return
	}
	kinds := w.enabledFaults()
	if len(kinds) == 0 {
		return
	}
	switch kinds[w.frng.IntN(len(kinds))] {
	case faultPartition:
		w.partition()
	case faultClog:
		w.clog()
	case faultCrash:
		if m := w.randomMember(func(m *member) bool { return m.up }); m != nil {
			if w.frng.IntN(5) == 0 {
				w.crashLoop(m)
				break
			}
			w.crash(m, "injected")
			w.scheduleRestart(m)
		}
	case faultPause:
		if m := w.randomMember(func(m *member) bool { return m.up && !m.paused }); m != nil {
			w.pause(m)
		}
	case faultClockJump:
		if m := w.randomMember(func(m *member) bool { return m.up && !m.paused }); m != nil {
			w.clockJump(m)
		}
	case faultFsyncError:
		if m := w.randomMember(func(m *member) bool { return m.up }); m != nil {
			w.tracef("fsync error armed on %s", m.name)
			w.stats.FsyncErrors++
			m.fs.FailNextSync(errors.New("input/output error (injected)"))
			w.scheduleRestart(m)
		}
	case faultCorruption:
		w.corrupt()
	case faultMembership:
		w.operator.start(w)
	}
}

func (w *world) randomMember(ok func(*member) bool) *member {
	var candidates []*member
	for _, m := range w.members {
		if !m.removed && ok(m) {
			candidates = append(candidates, m)
		}
	}
	if len(candidates) == 0 {
		return nil
	}
	return candidates[w.frng.IntN(len(candidates))]
}

func (w *world) scheduleRestart(m *member) {
	delay := int64(w.frng.ExpFloat64() * float64(w.electionNs()) * 2)
	w.after(delay, "restart "+m.name, func() { w.restartIfDown(m) })
}

// restartIfDown restarts m unless something restarted it meanwhile.
func (w *world) restartIfDown(m *member) {
	if !m.up {
		w.stats.Restarts++
		w.restart(m)
	}
}

func (w *world) liveIDs() []uint64 {
	var ids []uint64
	for _, m := range w.members {
		if !m.removed && !m.failStopped {
			ids = append(ids, m.id)
		}
	}
	return ids
}

func (w *world) leader() *member {
	for _, m := range w.members {
		if m.up && m.node != nil && m.node.Status().State.String() == "StateLeader" {
			return m
		}
	}
	return nil
}

// partition cuts the cluster in one of the shapes that broke other
// systems: the leader with at most one follower on the minority side
// (N1), one member alone, a random split, or one direction only (N2).
func (w *world) partition() {
	ids := w.liveIDs()
	if len(ids) < 2 {
		return
	}
	w.frng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	var minority []uint64
	shape := w.frng.IntN(4)
	switch shape {
	case 0: // isolate the leader, perhaps with one follower
		if l := w.leader(); l != nil {
			minority = []uint64{l.id}
			if len(ids) > 3 && w.frng.IntN(2) == 0 {
				for _, id := range ids {
					if id != l.id {
						minority = append(minority, id)
						break
					}
				}
			}
		} else {
			minority = ids[:1]
		}
	case 1:
		minority = ids[:1]
	default:
		minority = ids[:1+w.frng.IntN(len(ids)-1)]
	}
	var majority []uint64
	for _, id := range ids {
		if !slices.Contains(minority, id) {
			majority = append(majority, id)
		}
	}
	oneWay := shape == 3
	for _, a := range minority {
		for _, b := range majority {
			w.net.Cut(a, b)
			if !oneWay {
				w.net.Cut(b, a)
			}
		}
	}
	w.stats.Partitions++
	w.tracef("partition %s | %s oneway=%t", idList(minority), idList(majority), oneWay)
	w.after(w.holdNs(), "heal", func() {
		for _, a := range minority {
			for _, b := range majority {
				w.net.HealLink(a, b)
				w.net.HealLink(b, a)
			}
		}
		w.tracef("healed %s | %s", idList(minority), idList(majority))
	})
}

func idList(ids []uint64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%x", id)
	}
	return strings.Join(parts, ",")
}

// clog holds traffic on a few links for a while, then releases it in a
// burst (FDB's swizzle-clog: clog one by one, unclog in random order).
func (w *world) clog() {
	ids := w.liveIDs()
	if len(ids) < 2 {
		return
	}
	links := 1 + w.frng.IntN(len(ids))
	for i := 0; i < links; i++ {
		a, b := ids[w.frng.IntN(len(ids))], ids[w.frng.IntN(len(ids))]
		if a == b {
			continue
		}
		until := w.now + w.holdNs()
		w.net.Clog(a, b, until)
		w.tracef("clog %x->%x until %d", a, b, until)
		w.after(until-w.now+w.frng.Int64N(w.electionNs()+1), "unclog", func() { w.net.Unclog(a, b) })
	}
}

// pause freezes a member (no ticks, no processing; what arrives waits in
// its socket buffers), as a stopped process or a long GC pause does, for
// two to ten election timeouts (T1).
func (w *world) pause(m *member) {
	m.paused = true
	w.stats.Pauses++
	w.tracef("pause %s", m.name)
	inc := m.incarnation
	w.after(2*w.electionNs()+w.frng.Int64N(8*w.electionNs()+1), "resume "+m.name, func() {
		if m.incarnation == inc {
			w.resume(m)
		}
	})
}

func (w *world) resume(m *member) {
	if !m.paused {
		return
	}
	m.paused = false
	inbox := m.pausedInbox
	m.pausedInbox = nil
	w.tracef("resume %s with %d buffered", m.name, len(inbox))
	for _, msg := range inbox {
		if !m.up || m.paused {
			return
		}
		m.node.Step(msg)
		w.drive(m)
	}
}

// clockJump steps a member's clock: forward by up to three election
// timeouts at once (a burst of ticks), or back (no ticks for a while, as a
// monotonic clock that stalls) (T2).
func (w *world) clockJump(m *member) {
	w.stats.ClockJumps++
	if w.frng.IntN(2) == 0 {
		ticks := 1 + w.frng.IntN(3*w.k.ElectionTicks)
		w.tracef("clock of %s jumps forward %d ticks", m.name, ticks)
		w.clockFaults = append(w.clockFaults, linearizability.TimeSpan{From: w.now, To: w.now})
		for i := 0; i < ticks && m.up; i++ {
			m.node.Tick()
			w.drive(m)
		}
		return
	}
	m.tickJumpUntil = w.now + w.holdNs()
	w.tracef("clock of %s stalls until %d", m.name, m.tickJumpUntil)
	// A leader whose clock stands still cannot tell it lost its quorum: it
	// answers keepalives until its clock has run two election timeouts
	// (raft's check-quorum period) past the stall.
	w.clockFaults = append(w.clockFaults, linearizability.TimeSpan{From: w.now, To: m.tickJumpUntil + 2*w.electionNs()})
}

// crashLoop crashes a member three to ten times within a few seconds,
// some of them right as it comes back (D11).
func (w *world) crashLoop(m *member) {
	crashes := 3 + w.frng.IntN(8)
	w.tracef("crash loop on %s: %d crashes", m.name, crashes)
	at := int64(0)
	for i := 0; i < crashes; i++ {
		w.after(at, "crash-loop crash "+m.name, func() { w.crash(m, "crash loop") })
		restartAfter := w.frng.Int64N(w.electionNs() + 1)
		w.after(at+restartAfter, "crash-loop restart "+m.name, func() { w.restartIfDown(m) })
		at += restartAfter + w.frng.Int64N(2*w.electionNs()+1)
	}
}

// corrupt damages one member's synced write-ahead log, then crashes and
// restarts it: the member must refuse to start (fail-stop) rather than run
// on a log it cannot trust. Half the time a bit flips in what is already
// on disk (D4); half the time the member's next write lands at the wrong
// offset while it runs on, unaware (D5). One member per run at most, so a
// quorum stays whole.
func (w *world) corrupt() {
	for _, m := range w.members {
		if m.corrupted {
			return
		}
	}
	m := w.randomMember(func(m *member) bool { return m.up })
	if m == nil {
		return
	}
	switch w.frng.IntN(3) {
	case 1:
		w.strayBytes(m)
		return
	case 2:
		delta := int64(w.frng.IntN(8192)) - 4096
		if delta == 0 {
			delta = 512
		}
		m.fs.MisdirectNextWrite(delta)
		m.corrupted = true
		w.stats.Corrupted++
		w.tracef("corrupt %s: its next write lands %d bytes off", m.name, delta)
		inc := m.incarnation
		w.after(w.holdNs(), "crash misdirected "+m.name, func() {
			if m.incarnation == inc {
				w.crash(m, "after a misdirected write")
				w.scheduleRestart(m)
			}
		})
		return
	}
	name, bit, ok := m.fs.FlipRandomBit(w.frng, func(name string) bool { return strings.HasPrefix(name, walDir+"/") })
	if !ok {
		return
	}
	m.corrupted = true
	w.stats.Corrupted++
	w.tracef("corrupt %s: bit %d of %s", m.name, bit, name)
	w.crash(m, "corrupted disk")
	w.scheduleRestart(m)
}

// strayBytes crashes a member and writes a few bytes into the unused space
// after its newest WAL segment's data, as a write gone astray (or rotted
// bits) would leave: they are not records, nothing acknowledged is there,
// and the member must start again, cutting them and saying so, or refuse
// when they could be records (an end marker last, a sound header in them).
func (w *world) strayBytes(m *member) {
	w.crash(m, "stray bytes")
	names, err := m.fs.List(walDir)
	if err != nil || len(names) == 0 {
		return
	}
	newest := ""
	for _, n := range names {
		if strings.HasSuffix(n, ".wal") {
			newest = walDir + "/" + n
		}
	}
	if newest == "" {
		return
	}
	b := make([]byte, 1+w.frng.IntN(3))
	for i := range b {
		b[i] = byte(1 + w.frng.IntN(255))
	}
	off, err := m.fs.WriteStray(newest, int64(w.frng.IntN(4096)), b)
	if err != nil {
		w.fail("harness", "stray bytes into %s of %s: %v", newest, m.name, err)
		return
	}
	m.corrupted = true
	m.strayFile, m.strayOffset = newest, off
	w.stats.Corrupted++
	w.tracef("corrupt %s: stray bytes %x at offset %d of %s", m.name, b, off, newest)
	w.scheduleRestart(m)
}

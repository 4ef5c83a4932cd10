package sim

import (
	"encoding/binary"
	"fmt"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/noded/noded/disk"
	"github.com/noded/noded/node"
)

// member is the simulator's host for one member: what server is in
// production (disk, network, clock, client connections), on virtual time.
type member struct {
	index   int
	id      uint64
	name    string
	peerURL string

	fs          *disk.SimFS
	storage     *disk.Storage
	node        *node.Node // nil while down
	incarnation int        // bumped on every crash; events of an older one are void

	up          bool
	paused      bool
	failStopped bool // refused to start on a corrupt disk: down for good
	removed     bool
	joined      bool // added at runtime (not an initial member)
	corrupted   bool // the injector flipped a bit in its synced log
	// strayFile and strayOffset name stray bytes the injector wrote after
	// the newest segment's data while the member was down: the next Open
	// must refuse, or cut them and say so.
	strayFile   string
	strayOffset int64

	tickPeriodNs  int64
	tickJumpUntil int64 // clock jumped back: no ticks until then
	pausedInbox   []*event

	tickBase    int64           // ticks of earlier incarnations, so the member's clock never runs back
	durableTerm uint64          // the highest term in a hard state known synced
	syncQueue   []*node.Persist // writes the node waits on, oldest first
	lastSyncAt  int64           // when the newest queued sync completes: syncs complete in order
}

// pausedInboxMax bounds what a paused member buffers (a real process's
// socket buffers are finite too); the excess is lost.
const pausedInboxMax = 4096

const (
	walDir  = "member/wal"
	snapDir = "member/snap"
)

func (w *world) newMember(index int, peerURL string, id uint64) *member {
	m := &member{
		index:   index,
		id:      id,
		name:    fmt.Sprintf("m%d", index),
		peerURL: peerURL,
		fs:      disk.NewSimFS(),
	}
	drift := int64(0)
	if index < len(w.k.DriftPermille) {
		drift = int64(w.k.DriftPermille[index])
	}
	// A member whose clock runs fast ticks more often in virtual time.
	m.tickPeriodNs = w.k.TickMs * 1_000_000 * 1000 / (1000 + drift)
	return m
}

func (w *world) nodeConfig(m *member) node.Config {
	return node.Config{
		ID:                       m.id,
		ClusterID:                w.clusterID,
		Name:                     m.name,
		ClientURLs:               []string{fmt.Sprintf("http://%s:2379", m.name)},
		TickMs:                   w.k.TickMs,
		ElectionTicks:            w.k.ElectionTicks,
		HeartbeatTicks:           1,
		SnapshotCount:            w.k.SnapshotCount,
		SnapshotCatchUpEntries:   w.k.CatchUpEntries,
		WatchProgressNotifyTicks: int(10_000 / w.k.TickMs), // every 10 s of the member's clock
		StrictReconfigCheck:      true,
		RequestIDBase:            uint64(m.index+1)<<56 | uint64(m.incarnation)<<40,
		ReportApplied:            true,
		ReportLeaseEvents:        true,
		Version:                  "3.5.0",
		Planted:                  w.opts.Planted,
	}
}

func metadataFor(memberID, clusterID uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, memberID)
	return binary.BigEndian.AppendUint64(b, clusterID)
}

// bootstrap starts an initial member of the cluster.
func (w *world) bootstrap(m *member) {
	w.startEmpty(m, "bootstrap", func(cfg node.Config) (*node.Node, error) { return node.Bootstrap(cfg, w.initial) })
}

// join starts a member added at runtime, with an empty disk.
func (w *world) join(m *member) {
	m.joined = true
	w.startEmpty(m, "join", func(cfg node.Config) (*node.Node, error) { return node.Restart(cfg, node.Durable{}) })
}

// startEmpty creates m's storage on its empty disk and starts its node
// with start; verb names the step in a failure.
func (w *world) startEmpty(m *member, verb string, start func(node.Config) (*node.Node, error)) {
	st, err := disk.Create(m.fs, walDir, snapDir, metadataFor(m.id, w.clusterID), disk.Options{})
	if err != nil {
		w.fail("%s %s: create storage: %v", verb, m.name, err)
		return
	}
	n, err := start(w.nodeConfig(m))
	if err != nil {
		w.fail("%s %s: %v", verb, m.name, err)
		return
	}
	w.started(m, st, n)
}

// started marks m up with its storage and node and sets it going.
func (w *world) started(m *member, st *disk.Storage, n *node.Node) {
	m.storage, m.node, m.up = st, n, true
	w.scheduleTick(m)
	w.drive(m)
}

// crash stops a member the way a power cut does: the disk keeps what was
// synced (and, in torn mode, a random prefix of the rest).
func (w *world) crash(m *member, why string) {
	if !m.up {
		return
	}
	w.tracef("crash %s (%s)", m.name, why)
	w.stats.Crashes++
	mode := disk.CrashLoseUnsynced
	if w.k.TornCrashes {
		switch w.frng.IntN(3) {
		case 1:
			mode = disk.CrashTorn
		case 2:
			mode = disk.CrashZeroTail
		}
	}
	m.fs.Crash(w.frng, mode)
	m.tickBase += m.node.Status().Tick
	m.node, m.storage, m.up, m.paused = nil, nil, false, false
	m.syncQueue, m.lastSyncAt = nil, 0
	m.pausedInbox = nil
	m.incarnation++
	w.streamsBroken(m)
	if w.phase != phaseSafety {
		// Healing means nothing stays down: a fault armed before the
		// liveness phase (an fsync error) that strikes in it is restarted
		// from at once, as an operator would.
		w.after(w.electionNs(), "restart "+m.name, func() { w.restart(m) })
	}
}

// restart brings a crashed member back from its disk.
func (w *world) restart(m *member) {
	if m.up || m.failStopped || m.removed {
		return
	}
	st, rec, err := disk.Open(m.fs, walDir, snapDir, disk.Options{})
	if err != nil {
		if m.corrupted {
			// Detected corruption: the member refuses to start, which is the
			// right answer (fail-stop, never silent truncation).
			w.tracef("restart %s refused: %v", m.name, err)
			m.failStopped = true
			w.stats.FailStops++
			return
		}
		w.fail("restart %s: storage refused to open a disk that was never corrupted: %v", m.name, err)
		m.failStopped = true
		return
	}
	if string(rec.Metadata) != string(metadataFor(m.id, w.clusterID)) {
		w.fail("restart %s: metadata %x is not this member's", m.name, rec.Metadata)
		return
	}
	for _, n := range rec.Notes {
		w.tracef("restart %s: %s", m.name, n)
	}
	if m.strayFile != "" {
		if !reportsCut(rec.Notes, m.strayFile, m.strayOffset) {
			w.fail("restart %s: stray bytes at offset %d of %s were accepted without a note saying they were cut", m.name, m.strayOffset, m.strayFile)
		}
		m.strayFile = ""
	}
	var n *node.Node
	if rec.Snapshot == nil && rec.HardState == nil && !m.joined {
		// No hard state reached the disk, so no write was ever synced: every
		// write that carries entries carries or follows a hard state, and
		// raft's vote and append responses wait for the sync. The member
		// never took part, so it bootstraps again, whether the disk kept
		// nothing or, torn, kept the bootstrap entries without the hard
		// state written after them. (Restarting would leave it without a
		// configuration: a one-member cluster would never elect anyone.)
		n, err = node.Bootstrap(w.nodeConfig(m), w.initial)
	} else {
		n, err = node.Restart(w.nodeConfig(m), node.Durable{Snapshot: rec.Snapshot, HardState: rec.HardState, Entries: rec.Entries})
	}
	if err != nil {
		w.fail("restart %s: %v", m.name, err)
		return
	}
	if hs := rec.HardState; hs != nil && hs.GetTerm() < m.durableTerm {
		w.fail("restart %s: recovered term %d below the synced term %d", m.name, hs.GetTerm(), m.durableTerm)
	} else if hs != nil {
		// A torn crash may keep a hard state written but never synced; what
		// Open recovers is durable from now on.
		m.durableTerm = hs.GetTerm()
	}
	w.tracef("restart %s incarnation=%d snap=%d entries=%d", m.name, m.incarnation, snapIndex(rec.Snapshot), len(rec.Entries))
	w.started(m, st, n)
}

// reportsCut reports whether notes say the bytes at offset of file were
// cut (as stray bytes, or as part of a torn tail), or the whole segment
// removed (it was only half started).
func reportsCut(notes []disk.RecoveryNote, file string, offset int64) bool {
	for _, n := range notes {
		if n.File != file {
			continue
		}
		switch n.Kind {
		case disk.RecoveryHalfStartedSegmentRemoved:
			return true
		case disk.RecoveryStrayBytesCut, disk.RecoveryTornTailCut:
			if offset >= n.OffsetBytes && offset < n.OffsetBytes+n.SizeBytes {
				return true
			}
		}
	}
	return false
}

func snapIndex(s *raftpb.Snapshot) uint64 {
	if s == nil {
		return 0
	}
	return s.GetMetadata().GetIndex()
}

func (w *world) scheduleTick(m *member) {
	w.q.schedule(&event{at: w.now + m.tickPeriodNs, kind: evTick, member: m.index, incarnation: m.incarnation})
}

// effectRoundsMax bounds the Effects calls one drive makes: the node asks
// for another round only to apply what it held back behind a write.
const effectRoundsMax = 64

// drive takes the member's effects and carries them out, again while the
// node says it has more.
func (w *world) drive(m *member) {
	for round := 0; round < effectRoundsMax; round++ {
		if !m.up || m.node == nil {
			return
		}
		eff := m.node.Effects()
		w.traceEffects(m, &eff)
		if !w.carryOut(m, &eff) || !eff.More {
			return
		}
	}
	w.fail("%s: still has more work after %d rounds of effects", m.name, effectRoundsMax)
}

// carryOut does what one batch of effects asks; false if the member
// stopped (a disk error, its removal).
func (w *world) carryOut(m *member, eff *node.Effects) bool {
	for _, p := range eff.Persist {
		if !w.persist(m, p) {
			return false // crashed on a disk error
		}
	}
	for _, msg := range eff.Messages {
		w.send(m, msg)
	}
	for _, r := range eff.Results {
		w.resultToClient(m, r)
	}
	for _, sr := range eff.Watch {
		w.watchToClient(m, sr)
	}
	if eff.SaveSnapshot != nil {
		if err := m.storage.SaveSnapshot(eff.SaveSnapshot); err != nil {
			w.crash(m, fmt.Sprintf("save snapshot: %v", err))
			return false
		}
	}
	for _, p := range eff.Proposed {
		w.proposed(m, p)
	}
	for _, a := range eff.Applied {
		w.applied(m, a)
	}
	for _, le := range eff.LeaseEvents {
		w.leaseEvent(m, le)
	}
	if eff.Removed {
		w.tracef("removed %s", m.name)
		m.removed = true
		m.up = false
		m.node = nil
		m.incarnation++
		w.streamsBroken(m)
		return false
	}
	return true
}

// persist writes a Persist to the member's disk now; its sync completes
// after a simulated disk latency (syncs complete in the order they were
// asked for, as one disk queue does), and only then does the node learn it
// is durable. A crash in between loses what was not synced.
func (w *world) persist(m *member, p *node.Persist) bool {
	if p.Snapshot != nil {
		if err := m.storage.SaveSnapshot(p.Snapshot); err != nil {
			w.crash(m, fmt.Sprintf("save received snapshot: %v", err))
			return false
		}
	}
	if err := m.storage.Append(p.HardState, p.Entries); err != nil {
		w.crash(m, fmt.Sprintf("append: %v", err))
		return false
	}
	if !p.Wait {
		return true
	}
	if len(m.syncQueue) >= syncQueueMax {
		w.fail("%s: more than %d writes waiting for a sync", m.name, syncQueueMax)
		return false
	}
	m.syncQueue = append(m.syncQueue, p)
	latency := int64(w.drng.ExpFloat64() * float64(w.k.SyncLatencyMeanUs*1000))
	m.lastSyncAt = max(m.lastSyncAt, w.now+latency)
	w.q.schedule(&event{at: m.lastSyncAt, kind: evDiskSync, member: m.index, incarnation: m.incarnation, persistSeq: p.Seq})
	return true
}

// syncQueueMax bounds a member's outstanding writes (the node bounds them
// itself; this is the host's own check).
const syncQueueMax = 4096

func (w *world) diskSynced(m *member, seq uint64) {
	if len(m.syncQueue) == 0 || m.syncQueue[0].Seq != seq {
		w.fail("%s: sync of seq %d completed out of order (queue %d long)", m.name, seq, len(m.syncQueue))
		return
	}
	p := m.syncQueue[0]
	if err := m.storage.Sync(); err != nil {
		// fsync failed: the member must not acknowledge anything it wrote,
		// and cannot know what reached the disk. It stops (crash).
		w.crash(m, fmt.Sprintf("fsync: %v", err))
		return
	}
	m.syncQueue = m.syncQueue[1:]
	if hs := p.HardState; hs != nil && hs.GetTerm() > m.durableTerm {
		m.durableTerm = hs.GetTerm()
	}
	m.node.Persisted(seq)
	w.drive(m)
}

// send routes one raft message through the simulated network.
func (w *world) send(from *member, msg *raftpb.Message) {
	to := w.memberByID(msg.GetTo())
	w.checkSendAfterPersist(from, msg)
	if msg.GetType() == raftpb.MsgSnap {
		// The transport reports a snapshot sent once it is on its way; a lost
		// one shows up as the follower never acknowledging it.
		defer from.node.ReportSnapshot(msg.GetTo(), false)
	}
	if to == nil {
		return
	}
	for _, at := range w.net.Route(w.now, from.id, to.id) {
		w.q.schedule(&event{at: at, kind: evDeliver, member: to.index, msg: msg})
	}
}

// checkSendAfterPersist asserts raft's contract from outside the node: a
// member never sends a vote or an append acknowledgement of a term its
// disk does not hold yet. (Requests may leave earlier: a candidate asks for
// votes, and a leader sends entries, before its own write is durable.)
func (w *world) checkSendAfterPersist(from *member, msg *raftpb.Message) {
	if w.opts.Planted.AckBeforeSync && !w.opts.assertSendsUnderPlantedBugs {
		return // the planted bug breaks exactly this; the checkers must catch it
	}
	switch msg.GetType() {
	case raftpb.MsgVoteResp, raftpb.MsgAppResp:
		if msg.GetTerm() > from.durableTerm {
			w.fail("%s sent %s at term %d before term %d was durable", from.name, msg.GetType(), msg.GetTerm(), from.durableTerm)
		}
	}
}

func (w *world) deliver(m *member, e *event) {
	if !m.up {
		return
	}
	if m.paused {
		if len(m.pausedInbox) < pausedInboxMax {
			m.pausedInbox = append(m.pausedInbox, e)
		}
		return
	}
	m.node.Step(e.msg)
	w.drive(m)
}

func (w *world) tick(m *member) {
	if !m.up {
		return
	}
	w.scheduleTick(m)
	if m.paused || w.now < m.tickJumpUntil {
		return
	}
	m.node.Tick()
	w.drive(m)
}

func (w *world) memberByID(id uint64) *member {
	for _, m := range w.members {
		if m.id == id {
			return m
		}
	}
	return nil
}

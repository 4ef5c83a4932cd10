package sim

import (
	"encoding/binary"
	"fmt"
	"math"

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
	pausedInbox   []*raftpb.Message

	tickBase   int64           // ticks of earlier incarnations, so the member's clock never runs back
	syncQueue  []*node.Persist // writes the node waits on, oldest first
	lastSyncAt int64           // when the newest queued sync completes: syncs complete in order
	// written is what the member's disk holds, synced what of it a sync
	// made durable: what a vote or an append acknowledgement may vouch for.
	written, synced diskState
	// cutSinceSync is the lowest index an unsynced write cut the log back
	// to (a follower replacing a conflicting tail, a received snapshot), or
	// noCut. A crash may keep such a write, so until the next sync the
	// synced log's end is not a floor for what a restart recovers.
	cutSinceSync uint64
}

const noCut = math.MaxUint64

// diskState is the part of a member's log the host tracks to check the
// raft contract from outside: the last index and its term, and the hard
// state's term and vote.
type diskState struct {
	lastIndex, lastTerm uint64
	term, vote          uint64
}

// wrote folds one write into s: a received snapshot resets the log to it,
// entries replace the log from their first index on (a follower's
// conflicting tail is cut), and a hard state replaces the term and vote.
func (s *diskState) wrote(p *node.Persist) {
	if snap := p.Snapshot; snap != nil {
		s.lastIndex, s.lastTerm = snap.GetMetadata().GetIndex(), snap.GetMetadata().GetTerm()
	}
	if n := len(p.Entries); n > 0 {
		s.lastIndex, s.lastTerm = p.Entries[n-1].GetIndex(), p.Entries[n-1].GetTerm()
	}
	if hs := p.HardState; hs != nil {
		s.term, s.vote = hs.GetTerm(), hs.GetVote()
	}
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
	m.tickPeriodNs = w.tickPeriodNs(index)
	return m
}

// tickPeriodNs is member index's tick in virtual time: a member whose
// clock runs fast ticks more often.
func (w *world) tickPeriodNs(index int) int64 {
	drift := int64(0)
	if index < len(w.k.DriftPermille) {
		drift = int64(w.k.DriftPermille[index])
	}
	return w.k.TickMs * 1_000_000 * 1000 / (1000 + drift)
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
		Planted:                  w.plantedFor(m),
	}
}

// plantedFor is the run's planted bugs as member m runs them: the auth
// bug lives in one member only (member 0), so the others disagree with it.
func (w *world) plantedFor(m *member) node.PlantedBugs {
	p := w.opts.Planted
	if m.index != 0 {
		p.AuthSkipTxnCompares = false
	}
	return p
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
		w.fail("harness", "%s %s: create storage: %v", verb, m.name, err)
		return
	}
	n, err := start(w.nodeConfig(m))
	if err != nil {
		w.fail("harness", "%s %s: %v", verb, m.name, err)
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
	st, rec, err := disk.Open(m.fs, walDir, snapDir, disk.Options{PlantedCutDamage: w.opts.Planted.StorageCutsDamage})
	if err != nil {
		if m.corrupted {
			// Detected corruption: the member refuses to start, which is the
			// right answer (fail-stop, never silent truncation).
			w.tracef("restart %s refused: %v", m.name, err)
			m.failStopped = true
			w.stats.FailStops++
			return
		}
		w.fail("restart", "restart %s: storage refused to open a disk that was never corrupted: %v", m.name, err)
		m.failStopped = true
		return
	}
	if string(rec.Metadata) != string(metadataFor(m.id, w.clusterID)) {
		w.fail("restart", "restart %s: metadata %x is not this member's", m.name, rec.Metadata)
		return
	}
	for _, n := range rec.Notes {
		w.tracef("restart %s: %s", m.name, n)
	}
	if m.strayFile != "" {
		if !reportsCut(rec.Notes, m.strayFile, m.strayOffset) {
			w.fail("recovery-report", "restart %s: stray bytes at offset %d of %s were accepted without a note saying they were cut", m.name, m.strayOffset, m.strayFile)
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
		w.fail("restart", "restart %s: %v", m.name, err)
		return
	}
	w.checkRecovered(m, rec)
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
	w.q.schedule(event{at: w.now + m.tickPeriodNs, kind: evTick, member: m.index, incarnation: m.incarnation})
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
	w.fail("effects-bound", "%s: still has more work after %d rounds of effects", m.name, effectRoundsMax)
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
		if err := m.storage.SaveSnapshot(eff.SaveSnapshot.Encode()); err != nil {
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
	if snap := p.Snapshot; snap != nil {
		m.cutSinceSync = min(m.cutSinceSync, snap.GetMetadata().GetIndex())
	}
	if len(p.Entries) > 0 && p.Entries[0].GetIndex() <= m.written.lastIndex {
		m.cutSinceSync = min(m.cutSinceSync, p.Entries[0].GetIndex()-1)
	}
	m.written.wrote(p)
	if !p.Wait {
		return true
	}
	if len(m.syncQueue) >= syncQueueMax {
		w.fail("sync-queue-bound", "%s: more than %d writes waiting for a sync", m.name, syncQueueMax)
		return false
	}
	m.syncQueue = append(m.syncQueue, p)
	latency := int64(w.drng.ExpFloat64() * float64(w.k.SyncLatencyMeanUs*1000))
	m.lastSyncAt = max(m.lastSyncAt, w.now+latency)
	w.q.schedule(event{at: m.lastSyncAt, kind: evDiskSync, member: m.index, incarnation: m.incarnation, persistSeq: p.Seq})
	return true
}

// syncQueueMax bounds a member's outstanding writes (the node bounds them
// itself; this is the host's own check).
const syncQueueMax = 4096

func (w *world) diskSynced(m *member, seq uint64) {
	if len(m.syncQueue) == 0 || m.syncQueue[0].Seq != seq {
		w.fail("sync-order", "%s: sync of seq %d completed out of order (queue %d long)", m.name, seq, len(m.syncQueue))
		return
	}
	if err := m.storage.Sync(); err != nil {
		// fsync failed: the member must not acknowledge anything it wrote,
		// and cannot know what reached the disk. It stops (crash).
		w.crash(m, fmt.Sprintf("fsync: %v", err))
		return
	}
	m.syncQueue = m.syncQueue[1:]
	// A sync makes everything written so far durable, later writes too.
	m.synced, m.cutSinceSync = m.written, noCut
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
		w.q.schedule(event{at: at, kind: evDeliver, member: to.index, msg: msg})
	}
}

// checkSendAfterPersist asserts raft's contract from outside the node: a
// member never sends a vote or an append acknowledgement that vouches for
// more than its disk holds durably. A granted vote vouches for the term and
// the vote in a synced hard state, an accepted append for a synced log that
// reaches the acknowledged index, in the message's term. (Requests may
// leave earlier: a candidate asks for votes, and a leader sends entries,
// before its own write is durable.)
func (w *world) checkSendAfterPersist(from *member, msg *raftpb.Message) {
	if w.opts.Planted.AckBeforeSync && !w.opts.assertSendsUnderPlantedBugs {
		return // the planted bug breaks exactly this; the checkers must catch it
	}
	d := from.synced
	switch msg.GetType() {
	case raftpb.MsgVoteResp:
		if msg.GetTerm() > d.term {
			w.fail("persist-before-send", "%s sent %s at term %d before term %d was durable", from.name, msg.GetType(), msg.GetTerm(), d.term)
		} else if !msg.GetReject() && msg.GetTerm() == d.term && d.vote != msg.GetTo() {
			w.fail("persist-before-send", "%s granted its vote in term %d to %x before the vote was durable (synced vote %x)", from.name, msg.GetTerm(), msg.GetTo(), d.vote)
		}
	case raftpb.MsgAppResp:
		if msg.GetTerm() > d.term {
			w.fail("persist-before-send", "%s sent %s at term %d before term %d was durable", from.name, msg.GetType(), msg.GetTerm(), d.term)
		} else if !msg.GetReject() && msg.GetIndex() > d.lastIndex {
			w.fail("persist-before-send", "%s acknowledged entries up to %d in term %d, but its synced log ends at %d", from.name, msg.GetIndex(), msg.GetTerm(), d.lastIndex)
		}
	}
}

// checkRecovered holds a restart to what was synced before the crash:
// storage must recover at least the synced log, up to its last index with
// the same term there, and a hard state no older than the synced one. It
// may recover more, part of the writes after the last sync, and those may
// have cut the log back (then the floor is where they cut it, and the
// synced last entry may have been replaced). What it recovers is on the
// disk, and durable, from now on.
func (w *world) checkRecovered(m *member, rec disk.Recovered) {
	got := diskState{}
	if s := rec.Snapshot; s != nil {
		got.lastIndex, got.lastTerm = s.GetMetadata().GetIndex(), s.GetMetadata().GetTerm()
	}
	termAt := func(i uint64) (uint64, bool) {
		if snap := rec.Snapshot; snap != nil && i == snap.GetMetadata().GetIndex() {
			return snap.GetMetadata().GetTerm(), true
		}
		if n := len(rec.Entries); n > 0 && i >= rec.Entries[0].GetIndex() && i <= rec.Entries[n-1].GetIndex() {
			return rec.Entries[i-rec.Entries[0].GetIndex()].GetTerm(), true
		}
		return 0, false
	}
	if n := len(rec.Entries); n > 0 {
		got.lastIndex, got.lastTerm = rec.Entries[n-1].GetIndex(), rec.Entries[n-1].GetTerm()
	}
	if hs := rec.HardState; hs != nil {
		got.term, got.vote = hs.GetTerm(), hs.GetVote()
	}
	want := m.synced
	floor := min(want.lastIndex, m.cutSinceSync)
	switch {
	case got.term < want.term:
		w.fail("recovered-state", "restart %s: recovered term %d below the synced term %d", m.name, got.term, want.term)
	case got.term == want.term && want.vote != 0 && got.vote != want.vote:
		w.fail("recovered-state", "restart %s: recovered vote %x in term %d, synced vote %x", m.name, got.vote, got.term, want.vote)
	case got.lastIndex < floor:
		w.fail("recovered-state", "restart %s: recovered a log ending at %d, but it was synced up to %d", m.name, got.lastIndex, floor)
	case want.lastIndex > 0 && m.cutSinceSync >= want.lastIndex:
		// Covered by the snapshot when it is older than the snapshot.
		if snap := rec.Snapshot; snap == nil || want.lastIndex > snap.GetMetadata().GetIndex() {
			if term, ok := termAt(want.lastIndex); !ok || term != want.lastTerm {
				w.fail("recovered-state", "restart %s: recovered entry %d has term %d (found %t), synced with term %d", m.name, want.lastIndex, term, ok, want.lastTerm)
			}
		}
	}
	m.written, m.synced, m.cutSinceSync = got, got, noCut
}

func (w *world) deliver(m *member, e *event) {
	if !m.up {
		return
	}
	if m.paused {
		if len(m.pausedInbox) < pausedInboxMax {
			m.pausedInbox = append(m.pausedInbox, e.msg)
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

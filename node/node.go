package node

import (
	"errors"
	"fmt"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
)

// Node is one member. Its methods are its inputs (Tick, Step, Submit,
// Watch*, Persisted, Report*); Effects returns what it asks of its host.
// It is not safe for concurrent use: the host calls it from one thread.
//
// The raft contract it keeps (go.etcd.io/raft with AsyncStorageWrites):
//
//  1. Raft asks for a write (MsgStorageAppend: entries, hard state, a
//     snapshot) and the node hands it to the host as a Persist. The replies
//     that depend on it (a vote, an append acknowledgement, the leader's own
//     acknowledgement) are held until the host reports the write durable
//     with Persisted; writes complete in the order they were asked for.
//  2. Raft asks for committed, durable entries to be applied
//     (MsgStorageApply); the node applies them and tells raft.
//  3. Messages that need nothing durable (a leader's appends to followers,
//     heartbeats, vote requests) go out at once.
//
// Writes and applies overlap: while the host syncs one batch, the node
// applies the previous one (Effects returns early with More set, so that
// the host starts the write first). An acknowledged write is still on a
// quorum's disk, and a vote or an acknowledgement is never sent before
// what it vouches for is durable.
type Node struct {
	cfg     Config
	rn      *raft.RawNode
	storage *raftStorage
	store   *kvsm.Store
	members membership
	applied requestWindow // request IDs applied lately; a repeat is skipped

	confState *raftpb.ConfState

	tick          int64  // ticks received: this member's clock
	appliedIndex  uint64 // last entry applied to store
	snapshotIndex uint64 // index of the newest snapshot, local or received
	lead          uint64
	raftState     raft.StateType
	removed       bool

	persistSeq uint64
	appends    []pendingAppend   // writes handed to the host, oldest first
	applies    []*raftpb.Message // MsgStorageApply not applied yet, oldest first
	lastHS     *raftpb.HardState // the last hard state handed to the host

	sendSnapshot *raftpb.Snapshot // the last snapshot made for a follower (snapshotForSending)

	requestSeq uint64
	waiting    map[uint64]*waiter // proposals by request ID; lookups only
	timeouts   timeoutQueue
	reads      readQueue
	leases     leaseClock
	transfer   *waiter       // a pending MoveLeader
	proposals  proposalBatch // proposed, not yet stepped into raft
	// heldLeaseRequests are keepalives and time-to-lives a new leader
	// holds until it has applied an entry of its term; at most
	// PendingRequestsMax.
	heldLeaseRequests []*waiter
	publishAt         int64 // tick after which to (re)publish this member's attributes

	watchDropCounter int // planted DropWatchEvent's counter

	caller kvsm.AuthInfo // the identity of the request SubmitAs is handing in

	out Effects
}

// pendingAppend is a write raft asked for, handed to the host, whose
// replies wait for it to be durable.
type pendingAppend struct {
	persist *Persist
	msg     *raftpb.Message // the MsgStorageAppend
	done    bool            // completed early (only under the planted AckBeforeSync bug)
}

// PersistsInFlightMax bounds the writes handed to the host and not yet
// durable. Raft makes one per Ready; a host that stops syncing stalls the
// node here, visibly, rather than letting the queue grow. Hosts size their
// own queues of completions by it.
const PersistsInFlightMax = 1024

// Durable is what a member recovered from its disk.
type Durable struct {
	Snapshot  *raftpb.Snapshot
	HardState *raftpb.HardState
	Entries   []*raftpb.Entry
}

// Bootstrap starts a member of a new cluster whose initial members are
// given (etcd's --initial-cluster with --initial-cluster-state new). Every
// initial member bootstraps with the same list and so writes the same
// first entries: one conf change per member, in ID order.
func Bootstrap(cfg Config, initial []Member) (*Node, error) {
	if len(initial) == 0 {
		return nil, errors.New("node: bootstrap needs at least one member")
	}
	sorted := slices.Clone(initial)
	slices.SortFunc(sorted, func(a, b Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	found := false
	peers := make([]raft.Peer, len(sorted))
	for i, m := range sorted {
		if i > 0 && sorted[i-1].ID == m.ID {
			return nil, fmt.Errorf("node: member ID %x appears twice", m.ID)
		}
		if m.ID == cfg.ID {
			found = true
		}
		m.Name = "" // names are published once members run, as etcd does
		m.ClientURLs = nil
		peers[i] = raft.Peer{ID: m.ID, Context: confChangeContext(m)}
	}
	if !found {
		return nil, fmt.Errorf("node: member %x is not among the initial members", cfg.ID)
	}
	n, err := newNode(cfg, raft.NewMemoryStorage(), 0)
	if err != nil {
		return nil, err
	}
	if err := n.rn.Bootstrap(peers); err != nil {
		return nil, fmt.Errorf("node: bootstrap: %w", err)
	}
	return n, nil
}

// Restart resumes a member from what it recovered from disk. A member with
// nothing on disk (one added at runtime, etcd's --initial-cluster-state
// existing) starts empty and learns the cluster from the leader.
func Restart(cfg Config, d Durable) (*Node, error) {
	ms := raft.NewMemoryStorage()
	var applied uint64
	var snapParts *snapshotParts
	if d.Snapshot != nil && !raft.IsEmptySnap(d.Snapshot) {
		parts, err := decodeSnapshot(d.Snapshot.GetData())
		if err != nil {
			return nil, err
		}
		snapParts = &parts
		if err := ms.ApplySnapshot(withoutData(d.Snapshot)); err != nil {
			return nil, fmt.Errorf("node: snapshot: %w", err)
		}
		applied = d.Snapshot.GetMetadata().GetIndex()
	}
	if len(d.Entries) > 0 {
		first := d.Entries[0].GetIndex()
		if first != applied+1 {
			return nil, fmt.Errorf("node: recovered entries start at %d, not after the snapshot at %d", first, applied)
		}
		if err := ms.Append(d.Entries); err != nil {
			return nil, fmt.Errorf("node: entries: %w", err)
		}
	}
	if d.HardState != nil && !raft.IsEmptyHardState(d.HardState) {
		hs := proto.Clone(d.HardState).(*raftpb.HardState)
		last, _ := ms.LastIndex()
		// The commit index is written without waiting for a sync, so a crash
		// may leave it behind a snapshot that was synced later; raft
		// re-learns it, but must not start below what is already applied.
		if hs.GetCommit() < applied {
			hs.Commit = proto.Uint64(applied)
		}
		if hs.GetCommit() > last {
			return nil, fmt.Errorf("node: hard state commits %d but the log ends at %d", hs.GetCommit(), last)
		}
		if err := ms.SetHardState(hs); err != nil {
			return nil, fmt.Errorf("node: hard state: %w", err)
		}
	}
	n, err := newNode(cfg, ms, applied)
	if err != nil {
		return nil, err
	}
	if snapParts != nil {
		if err := n.installSnapshotState(d.Snapshot, *snapParts); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func newNode(cfg Config, mem *raft.MemoryStorage, applied uint64) (*Node, error) {
	ms := &raftStorage{MemoryStorage: mem}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = discardLogger{}
	}
	rc := &raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   ms,
		Applied:                   applied,
		MaxSizePerMsg:             cfg.MaxSizePerMsg,
		MaxCommittedSizePerReady:  4 * cfg.MaxSizePerMsg,
		MaxUncommittedEntriesSize: 1 << 30,
		MaxInflightMsgs:           cfg.MaxInflightMsgs,
		AsyncStorageWrites:        true,
		CheckQuorum:               true,
		PreVote:                   true,
		ReadOnlyOption:            readOnlyOption(cfg.LeaseBasedReads),
		StepDownOnRemoval:         true,
		Logger:                    logger,
	}
	rn, err := raft.NewRawNode(rc)
	if err != nil {
		return nil, fmt.Errorf("node: raft: %w", err)
	}
	_, cs, err := ms.InitialState()
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:           cfg,
		rn:            rn,
		storage:       ms,
		store:         kvsm.New(cfg.kvsmConfig()),
		confState:     cs,
		appliedIndex:  applied,
		snapshotIndex: applied,
		waiting:       map[uint64]*waiter{},
		leases:        newLeaseClock(),
		applied:       newRequestWindow(),
	}
	ms.snapshotSource = n.snapshotForSending
	return n, nil
}

func readOnlyOption(leaseBased bool) raft.ReadOnlyOption {
	if leaseBased {
		return raft.ReadOnlyLeaseBased
	}
	return raft.ReadOnlySafe
}

func (c Config) kvsmConfig() kvsm.Config {
	return kvsm.Config{MaxTxnOps: c.MaxTxnOps, MinLeaseTTLSeconds: c.MinLeaseTTLSeconds(),
		PlantedAuthSkipTxnCompares: c.Planted.AuthSkipTxnCompares, PlantedProgressOvertakesEvents: c.Planted.ProgressOvertakesEvents}
}

// Tick advances the member's clock by one tick.
func (n *Node) Tick() {
	n.tick++
	n.rn.Tick()
	n.expireTimeouts()
	n.retryReadIndex()
	n.expireLeases()
	n.serveHeldLeaseRequests()
	n.maybePublish()
	if t := n.cfg.WatchProgressNotifyTicks; t > 0 && n.tick%int64(t) == 0 {
		n.store.WatchProgressNotify()
	}
}

// Step delivers a raft message from a peer. Messages from removed members
// and messages for another member are dropped.
func (n *Node) Step(m *raftpb.Message) {
	if m.GetTo() != n.cfg.ID || n.members.isRemoved(m.GetFrom()) {
		return
	}
	if raft.IsLocalMsg(m.GetType()) {
		return // a peer must never make this member step a local message
	}
	_ = n.rn.Step(m) // errors are raft's own refusals (e.g. a stale response); nothing to do
}

// CampaignIfSoleVoter starts an election at once when this member is the
// only voter of its configuration: no other member can win or needs to be
// heard, so waiting out an election timeout only delays a restarted
// one-member cluster. raft still refuses while a configuration change it
// has committed is not applied yet; the timeout then elects as usual.
func (n *Node) CampaignIfSoleVoter() {
	voters := n.confState.GetVoters()
	if n.isLeader() || len(voters) != 1 || voters[0] != n.cfg.ID || len(n.confState.GetVotersOutgoing()) > 0 {
		return
	}
	_ = n.rn.Campaign() // refused only for an unapplied configuration change: the timeout elects instead
}

// RepackStep moves up to maxKeys more of the store's entries and values
// into densely packed memory (kvsm.Repacker) and reports whether r has been
// over every key. It changes where the state lives, not what it is: the
// host may call it whenever the member is idle, and members need not agree
// on when.
func (n *Node) RepackStep(r *kvsm.Repacker, maxKeys int) bool { return n.store.RepackStep(r, maxKeys) }

// ReportUnreachable tells raft a message to id could not be sent.
func (n *Node) ReportUnreachable(id uint64) { n.rn.ReportUnreachable(id) }

// ReportSnapshot tells raft how sending a snapshot to id went.
func (n *Node) ReportSnapshot(id uint64, failed bool) {
	// The bytes made for sending are let go once a send ends; another
	// follower that needs them gets them made again.
	n.sendSnapshot = nil
	status := raft.SnapshotFinish
	if failed {
		status = raft.SnapshotFailure
	}
	n.rn.ReportSnapshot(id, status)
}

// Persisted reports that the Persist with this sequence number is durable,
// and with it every earlier one. The host reports the writes it was asked
// to wait on (Persist.Wait), in the order it got them.
func (n *Node) Persisted(seq uint64) {
	if len(n.appends) == 0 || n.appends[0].persist.Seq > seq {
		panic(fmt.Sprintf("node %x: persisted seq %d, but the oldest write waiting is %v", n.cfg.ID, seq, n.oldestAppend()))
	}
	for len(n.appends) > 0 && n.appends[0].persist.Seq <= seq {
		n.completeAppend()
	}
	// Writes that need no sync and were queued behind this one are done too.
	for len(n.appends) > 0 && !n.appends[0].persist.Wait {
		n.completeAppend()
	}
}

func (n *Node) oldestAppend() string {
	if len(n.appends) == 0 {
		return "none"
	}
	return n.appends[0].persist.String()
}

// Effects drives raft as far as it can go without waiting on the disk and
// returns everything the host must do, clearing it. When More is set the
// node has work left that it held back so that the host could start a
// write first; the host carries out these effects and calls Effects again.
func (n *Node) Effects() Effects {
	n.runApplies()
	n.drive()
	n.pollWatches()
	out := n.out
	n.out = Effects{}
	out.More = len(n.applies) > 0
	return out
}

// readyLoopMax bounds the Ready rounds one Effects call takes; raft settles
// in a few, and the bound turns a livelock into a visible stall.
const readyLoopMax = 64

func (n *Node) drive() {
	for i := 0; i < readyLoopMax; i++ {
		if len(n.appends) >= PersistsInFlightMax {
			return
		}
		// Proposals made since the last round (by clients, or by applying
		// the last Ready) go into raft together.
		n.flushProposals()
		if !n.rn.HasReady() {
			return
		}
		rd := n.rn.Ready()
		n.onSoftState(rd.SoftState)
		n.onReadStates(rd.ReadStates)
		for _, m := range rd.Messages {
			switch m.GetTo() {
			case raft.LocalAppendThread:
				n.startAppend(m)
			case raft.LocalApplyThread:
				n.applies = append(n.applies, m)
			default:
				n.out.Messages = append(n.out.Messages, m)
			}
		}
		if len(n.out.Persist) > 0 && len(n.applies) > 0 {
			// Let the host start the write before the node spends time
			// applying: the next Effects call applies.
			return
		}
		n.runApplies()
	}
}

// startAppend hands one write to the host. It needs a sync when it carries
// entries, a snapshot or a new term or vote; a write of the commit index
// alone does not (raft re-learns it after a crash), and completes as soon
// as every write before it has.
func (n *Node) startAppend(m *raftpb.Message) {
	n.persistSeq++
	p := &Persist{Seq: n.persistSeq, Entries: m.GetEntries()}
	if m.Term != nil {
		p.HardState = &raftpb.HardState{Term: m.Term, Vote: m.Vote, Commit: m.Commit}
	}
	if s := m.GetSnapshot(); s != nil && !raft.IsEmptySnap(s) {
		p.Snapshot = s
	}
	newTermOrVote := p.HardState != nil && (p.HardState.GetTerm() != n.lastHS.GetTerm() || p.HardState.GetVote() != n.lastHS.GetVote())
	p.Wait = len(p.Entries) > 0 || p.Snapshot != nil || newTermOrVote
	if p.HardState != nil {
		n.lastHS = p.HardState
	}
	n.out.Persist = append(n.out.Persist, p)
	n.appends = append(n.appends, pendingAppend{persist: p, msg: m})
	if n.cfg.Planted.AckBeforeSync || (n.cfg.Planted.AckAppendBeforeSync && !newTermOrVote && p.Snapshot == nil) {
		// Planted bug: act on the write before it is durable.
		n.finishAppend(&n.appends[len(n.appends)-1])
		n.appends[len(n.appends)-1].done = true
	}
	if !p.Wait && len(n.appends) == 1 {
		n.completeAppend()
	}
}

// completeAppend finishes the oldest write: it is durable.
func (n *Node) completeAppend() {
	pa := n.appends[0]
	n.appends[0] = pendingAppend{}
	n.appends = n.appends[1:]
	if !pa.done {
		n.finishAppend(&pa)
	}
}

// finishAppend does what a durable write allows: raft's in-memory log
// takes the entries (raft reads them back from it), a snapshot replaces the
// applied state, and the held replies go out or back to raft.
func (n *Node) finishAppend(pa *pendingAppend) {
	m := pa.msg
	if s := pa.persist.Snapshot; s != nil {
		if err := n.storage.ApplySnapshot(withoutData(s)); err != nil {
			panic(fmt.Sprintf("node %x: apply snapshot %d: %v", n.cfg.ID, s.GetMetadata().GetIndex(), err))
		}
		parts, err := decodeSnapshot(s.GetData())
		if err != nil {
			// The leader built it and the transport checksummed it: a snapshot
			// that does not decode is corruption, and the member stops.
			panic(fmt.Sprintf("node %x: snapshot %d from the leader: %v", n.cfg.ID, s.GetMetadata().GetIndex(), err))
		}
		if err := n.installSnapshotState(s, parts); err != nil {
			panic(fmt.Sprintf("node %x: %v", n.cfg.ID, err))
		}
		// Reads waiting for an index the snapshot covers need not wait for
		// the next entry.
		n.serveReads()
	}
	if len(m.GetEntries()) > 0 {
		if err := n.storage.Append(m.GetEntries()); err != nil {
			panic(fmt.Sprintf("node %x: append to raft storage: %v", n.cfg.ID, err))
		}
	}
	if hs := pa.persist.HardState; hs != nil {
		if err := n.storage.SetHardState(hs); err != nil {
			panic(fmt.Sprintf("node %x: hard state: %v", n.cfg.ID, err))
		}
	}
	for _, resp := range m.GetResponses() {
		if resp.GetTo() == n.cfg.ID {
			_ = n.rn.Step(resp) // a stale self-response (older term) is refused by raft, as intended
			continue
		}
		n.out.Messages = append(n.out.Messages, resp)
	}
}

// runApplies applies what raft asked to be applied, oldest first, and
// tells raft.
func (n *Node) runApplies() {
	for len(n.applies) > 0 {
		m := n.applies[0]
		n.applies[0] = nil
		n.applies = n.applies[1:]
		n.applyEntries(m.GetEntries())
		for _, resp := range m.GetResponses() {
			_ = n.rn.Step(resp)
		}
		n.maybeSnapshot()
		n.maybeCompactLog()
	}
}

func (n *Node) encodeSnapshot() []byte {
	return encodeSnapshot(n.store, &n.members, n.applied.ordered())
}

// snapshotForSending is the snapshot raft sends a follower whose log is
// too far behind: the applied state as it is now, not the last snapshot
// taken. The last one may predate the follower itself (a member added
// after it), and raft refuses a snapshot whose configuration lacks the
// recipient, which would leave the new member unable ever to catch up.
// It is made only when a follower needs it, once per applied index while
// sends are in flight, and let go when raft hears how a send went
// (ReportSnapshot): raft's in-memory storage keeps no snapshot bytes.
func (n *Node) snapshotForSending() (*raftpb.Snapshot, error) {
	if n.sendSnapshot != nil && n.sendSnapshot.GetMetadata().GetIndex() == n.appliedIndex {
		return n.sendSnapshot, nil
	}
	term, err := n.storage.Term(n.appliedIndex)
	if err != nil {
		// The applied index is never below the log's first index (the log
		// is only ever compacted below it), so this is not expected; raft
		// retries the send later.
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	n.sendSnapshot = &raftpb.Snapshot{
		Data: n.encodeSnapshot(),
		Metadata: &raftpb.SnapshotMetadata{
			Index:     proto.Uint64(n.appliedIndex),
			Term:      proto.Uint64(term),
			ConfState: proto.Clone(n.confState).(*raftpb.ConfState),
		},
	}
	return n.sendSnapshot, nil
}

// installSnapshotState replaces the applied state with a snapshot's.
func (n *Node) installSnapshotState(snap *raftpb.Snapshot, parts snapshotParts) error {
	if err := n.store.Replace(parts.kv); err != nil {
		return fmt.Errorf("node: snapshot %d: kv state: %w", snap.GetMetadata().GetIndex(), err)
	}
	n.members = parts.membership
	n.applied = requestWindowFrom(parts.requests)
	n.confState = proto.Clone(snap.GetMetadata().GetConfState()).(*raftpb.ConfState)
	n.appliedIndex = snap.GetMetadata().GetIndex()
	n.snapshotIndex = n.appliedIndex
	if n.isLeader() {
		n.refreshAllLeases()
	}
	return nil
}

// maybeSnapshot takes a local snapshot every SnapshotCount applied entries,
// for the host to write: the disk's log before it can then be released.
func (n *Node) maybeSnapshot() {
	if n.appliedIndex-n.snapshotIndex < n.cfg.SnapshotCount {
		return
	}
	// Raft's storage keeps the snapshot's metadata only: the state goes to
	// the host once, frozen, to be encoded and written, and a follower
	// that needs a snapshot gets one made from the applied state
	// (snapshotForSending).
	meta, err := n.storage.CreateSnapshot(n.appliedIndex, n.confState, nil)
	if err != nil {
		panic(fmt.Sprintf("node %x: create snapshot at %d: %v", n.cfg.ID, n.appliedIndex, err))
	}
	n.snapshotIndex = n.appliedIndex
	n.out.SaveSnapshot = n.takeLocalSnapshot(meta.GetMetadata())
}

// maybeCompactLog lets raft's in-memory log forget applied entries but the
// last SnapshotCatchUpEntries, kept for followers a little behind; one
// further behind gets a snapshot of the applied state (snapshotForSending).
// The in-memory log is not tied to the snapshots on disk: every entry in it
// was durable before it was applied, and the disk keeps what a restart
// replays. It is compacted in steps of a quarter of the kept entries, so
// that the copy of the kept part is paid once per that many entries.
func (n *Node) maybeCompactLog() {
	keep := n.cfg.SnapshotCatchUpEntries
	if n.appliedIndex <= keep {
		return
	}
	compactTo := n.appliedIndex - keep
	first, _ := n.storage.FirstIndex()
	if compactTo < first+max(keep/4, 1) {
		return
	}
	if err := n.storage.Compact(compactTo); err != nil && !errors.Is(err, raft.ErrCompacted) {
		panic(fmt.Sprintf("node %x: compact raft log to %d: %v", n.cfg.ID, compactTo, err))
	}
}

func (n *Node) onSoftState(ss *raft.SoftState) {
	if ss == nil {
		return
	}
	wasLeader := n.isLeader()
	n.lead = ss.Lead
	n.raftState = ss.RaftState
	if !wasLeader && n.isLeader() {
		n.becameLeader()
	}
	if wasLeader && !n.isLeader() {
		n.leases.reset()
		n.serveHeldLeaseRequests()
	}
	if n.transfer != nil && n.lead == n.transfer.target {
		n.resolve(n.transfer, &pb.MoveLeaderResponse{Header: n.header(0)}, nil)
		n.transfer = nil
	}
}

func (n *Node) isLeader() bool { return n.raftState == raft.StateLeader }

func (n *Node) nextRequestID() uint64 {
	n.requestSeq++
	return n.cfg.RequestIDBase + n.requestSeq
}

// header is the response header for this member at the given revision
// (0 means the store's current revision).
func (n *Node) header(rev int64) *pb.ResponseHeader {
	if rev == 0 {
		rev = n.store.Rev()
	}
	return &pb.ResponseHeader{
		ClusterId: n.cfg.ClusterID,
		MemberId:  n.cfg.ID,
		Revision:  rev,
		RaftTerm:  n.rn.BasicStatus().GetTerm(),
	}
}

// clusterHeader is the header of the Cluster service's responses: etcd
// leaves the store revision out of them (etcdctl member list -w json shows
// no revision), so noded does too.
func (n *Node) clusterHeader() *pb.ResponseHeader {
	h := n.header(0)
	h.Revision = 0
	return h
}

// Status is what the member knows about itself, for hosts (and
// Maintenance.Status).
type Status struct {
	ID, Lead, Term  uint64
	State           raft.StateType
	AppliedIndex    uint64
	CommitIndex     uint64
	LastIndex       uint64
	SnapshotIndex   uint64
	Revision        int64
	CompactRevision int64
	IsLearner       bool
	Removed         bool
	Tick            int64
	Persisting      bool
	PendingRequests int
	Members         []Member
}

func (s Status) String() string {
	return fmt.Sprintf("%x state=%s lead=%x term=%d applied=%d commit=%d last=%d snap=%d rev=%d compact=%d learner=%t removed=%t",
		s.ID, s.State, s.Lead, s.Term, s.AppliedIndex, s.CommitIndex, s.LastIndex, s.SnapshotIndex, s.Revision,
		s.CompactRevision, s.IsLearner, s.Removed)
}

// Status reports the member's state.
func (n *Node) Status() Status {
	bs := n.rn.BasicStatus()
	last, _ := n.storage.LastIndex()
	self, _ := n.members.get(n.cfg.ID)
	return Status{
		ID: n.cfg.ID, Lead: bs.Lead, Term: bs.GetTerm(), State: bs.RaftState,
		AppliedIndex: n.appliedIndex, CommitIndex: bs.GetCommit(), LastIndex: last, SnapshotIndex: n.snapshotIndex,
		Revision: n.store.Rev(), CompactRevision: n.store.CompactRev(),
		IsLearner: self.IsLearner, Removed: n.removed, Tick: n.tick, Persisting: len(n.appends) > 0,
		PendingRequests: len(n.waiting) + n.reads.size(),
		Members:         slices.Clone(n.members.members),
	}
}

// IsRemovedMember reports whether id was removed from the cluster. The
// production transport refuses such peers, which is how a member removed
// while it was cut off learns that it is gone.
func (n *Node) IsRemovedMember(id uint64) bool { return n.members.isRemoved(id) }

// RemovedMembers lists the IDs removed from the cluster, ascending, so that
// a restarted host can tell its transport to refuse them as removed.
func (n *Node) RemovedMembers() []uint64 { return slices.Clone(n.members.removed) }

// StateHash hashes the applied state; members at the same applied index
// must agree on it.
func (n *Node) StateHash() uint64 { return n.store.StateHash() }

// Store gives hosts read access to the state machine (views for concurrent
// readers, hashes). Hosts must not apply to it.
func (n *Node) Store() *kvsm.Store { return n.store }

// withoutData is snap's metadata alone, for raft's in-memory storage: the
// state is in the store and the bytes on disk, and raft asks for a
// snapshot only to send one (raftStorage.Snapshot), which the node makes.
func withoutData(snap *raftpb.Snapshot) *raftpb.Snapshot {
	return &raftpb.Snapshot{Metadata: snap.GetMetadata()}
}

// raftStorage is raft's in-memory log, but for the snapshot raft sends to
// a follower, which comes from the node (snapshotForSending).
type raftStorage struct {
	*raft.MemoryStorage
	snapshotSource func() (*raftpb.Snapshot, error)
}

// Snapshot is called by raft only to send a snapshot to a follower.
func (s *raftStorage) Snapshot() (*raftpb.Snapshot, error) {
	if s.snapshotSource != nil {
		return s.snapshotSource()
	}
	return s.MemoryStorage.Snapshot()
}

// discardLogger drops raft's log; hosts that want it pass their own.
type discardLogger struct{}

func (discardLogger) Debug(...any)              {}
func (discardLogger) Debugf(string, ...any)     {}
func (discardLogger) Error(...any)              {}
func (discardLogger) Errorf(string, ...any)     {}
func (discardLogger) Info(...any)               {}
func (discardLogger) Infof(string, ...any)      {}
func (discardLogger) Warning(...any)            {}
func (discardLogger) Warningf(string, ...any)   {}
func (discardLogger) Fatal(v ...any)            { panic(fmt.Sprint(v...)) }
func (discardLogger) Fatalf(f string, v ...any) { panic(fmt.Sprintf(f, v...)) }
func (discardLogger) Panic(v ...any)            { panic(fmt.Sprint(v...)) }
func (discardLogger) Panicf(f string, v ...any) { panic(fmt.Sprintf(f, v...)) }

package sim

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/noded/noded/linearizability"
	"github.com/noded/noded/net"
	"github.com/noded/noded/node"
)

// Options configure a run beyond what its seed decides.
type Options struct {
	Seed uint64
	// Tweak, if set, may change the knobs the seed drew (a test pinning a
	// cluster size, a campaign turning a fault off). Tweaks are printed with
	// the knobs.
	Tweak func(*Knobs)
	// Planted bugs, for the checkers' self-tests; never in production.
	Planted node.PlantedBugs
	// Trace, if set, receives one line per event and effect.
	Trace io.Writer
	// EventsMax bounds the run (a safety net against livelock); 0 = default.
	EventsMax int64

	// assertSendsUnderPlantedBugs keeps the persist-before-send assertion on
	// even with AckBeforeSync planted (the assertion's own test).
	assertSendsUnderPlantedBugs bool
}

// Report is what a run found.
type Report struct {
	Seed      uint64
	Knobs     Knobs
	TraceHash uint64
	OK        bool
	Failures  []string // everything that went wrong, in the order found
	Check     linearizability.Result
	Stats     Stats
	// Input is the history the checkers read; a failing run's report keeps
	// it for porcupine's visualization.
	Input linearizability.Input
}

// Stats count what happened in a run.
type Stats struct {
	Events, Ops, OpsOK, OpsUnknown, OpsFailed  int64
	Crashes, Restarts, FailStops, Partitions   int64
	Pauses, ClockJumps, FsyncErrors, Corrupted int64
	MemberChanges, WatchEvents, Snapshots      int64
	AuthRefused                                int64 // entries the permission check refused at apply
	VirtualNs, LivenessNs                      int64
	Net                                        net.SimNetworkStats
}

func (s Stats) String() string {
	return fmt.Sprintf("events=%d ops=%d ok=%d unknown=%d failed=%d crashes=%d restarts=%d fail-stops=%d partitions=%d "+
		"pauses=%d clock-jumps=%d fsync-errors=%d corrupted=%d member-changes=%d watch-events=%d auth-refused=%d virtual=%dms liveness=%dms %s",
		s.Events, s.Ops, s.OpsOK, s.OpsUnknown, s.OpsFailed, s.Crashes, s.Restarts, s.FailStops, s.Partitions,
		s.Pauses, s.ClockJumps, s.FsyncErrors, s.Corrupted, s.MemberChanges, s.WatchEvents, s.AuthRefused, s.VirtualNs/1e6, s.LivenessNs/1e6, s.Net)
}

// String is the report as a failing run prints it.
func (r Report) String() string {
	var b strings.Builder
	status := "ok"
	if !r.OK {
		status = "FAILED"
	}
	fmt.Fprintf(&b, "seed %d: %s trace=%016x\n%s\n%s\n", r.Seed, status, r.TraceHash, r.Knobs, r.Stats)
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "failure: %s\n", f)
	}
	if !r.OK {
		fmt.Fprintf(&b, "replay: go run ./cmd/nodesim -seed %d\n", r.Seed)
	}
	return b.String()
}

type eventKind uint8

const (
	evTick eventKind = iota + 1
	evDeliver
	evDiskSync
	evRequestArrive
	evReplyArrive
	evWatchRequestArrive
	evWatchArrive
	evClientNext
	evClientTimeout
	evFault
	evAction
	evLiveness
)

var eventKindNames = [...]string{
	evTick: "tick", evDeliver: "deliver", evDiskSync: "disk-sync", evRequestArrive: "request",
	evReplyArrive: "reply", evWatchRequestArrive: "watch-request", evWatchArrive: "watch",
	evClientNext: "client-next", evClientTimeout: "client-timeout", evFault: "fault", evAction: "action",
	evLiveness: "liveness",
}

func (k eventKind) String() string {
	if int(k) < len(eventKindNames) && eventKindNames[k] != "" {
		return eventKindNames[k]
	}
	return fmt.Sprintf("event-%d", k)
}

type event struct {
	at          int64
	seq         uint64
	kind        eventKind
	member      int
	incarnation int
	msg         *raftpb.Message
	persistSeq  uint64
	client      int
	opSeq       uint64
	result      node.Result
	watchReqs   []*pb.WatchRequest // read off the stream together
	watchResp   *pb.WatchResponse
	stream      uint64
	action      func()
	what        string
}

type world struct {
	k    Knobs
	opts Options
	now  int64
	q    eventQueue

	// One child stream per subsystem, so that a change in one (say, the
	// workload) does not shift the draws of another (the network).
	frng *rand.Rand // faults
	wrng *rand.Rand // workload
	drng *rand.Rand // disk latency
	net  *net.SimNetwork

	clusterID uint64
	initial   []node.Member // the initial members, as every one bootstraps with them
	members   []*member
	clients   []*client
	operator  operator
	auth      *authWorkload // nil unless Knobs.Auth

	history     []linearizability.Operation
	watches     []linearizability.WatchHistory
	leaseEvents []linearizability.LeaseEvent
	keepAlives  []linearizability.KeepAlive
	clockFaults []linearizability.TimeSpan // when a member's clock jumped or stalled
	committed   []committedRecord          // index i holds raft index i+1
	handles     map[handleKey]int          // (member, handle) -> history index, for Proposed; lookups only
	streams     map[uint64]*clientWatch

	phase         phase
	livenessStart int64
	failures      []string
	stats         Stats
	trace         traceHash
}

type handleKey struct {
	member int
	handle node.Handle
}

type phase uint8

const (
	phaseSafety phase = iota
	phaseLiveness
	phaseDone
)

// defaultEventsMax bounds a run's events: far more than a healthy run needs.
const defaultEventsMax = 50_000_000

// Run runs one seed to the end and checks it. Runs must not overlap in
// one process (see entropy.go).
func Run(opts Options) Report {
	k := Draw(opts.Seed)
	if opts.Tweak != nil {
		opts.Tweak(&k)
	}
	w := &world{
		k:       k,
		opts:    opts,
		frng:    rand.New(rand.NewPCG(opts.Seed, 0x666175)),
		wrng:    rand.New(rand.NewPCG(opts.Seed, 0x776f726b)),
		drng:    rand.New(rand.NewPCG(opts.Seed, 0x6469736b)),
		handles: map[handleKey]int{},
		streams: map[uint64]*clientWatch{},
	}
	w.net = net.NewSimNetwork(rand.New(rand.NewPCG(opts.Seed, 0x6e6574)))
	w.net.DelayMinNs = k.DelayMinUs * 1000
	w.net.DelayMeanNs = k.DelayMeanUs * 1000
	w.net.LossPermille = k.LossPermille
	w.net.DupPermille = k.DupPermille
	w.trace = newTraceHash(opts.Trace)
	w.tracef("knobs %s", strings.ReplaceAll(k.String(), "\n", "; "))

	withSeededEntropy(opts.Seed, w.runRecovering)

	rep := Report{Seed: opts.Seed, Knobs: k, TraceHash: w.trace.sum(), Stats: w.stats}
	rep.Stats.Net = w.net.Stats()
	rep.Input = w.checkerInput()
	// The checkers read the history even when the run failed on its own
	// (an assertion, a stall): what the clients saw until then must still
	// be right, and the checkers' verdict says more than the stall does.
	rep.Check = linearizability.Check(rep.Input, linearizability.Options{})
	if !rep.Check.OK {
		for _, f := range rep.Check.Failures {
			w.failures = append(w.failures, fmt.Sprintf("%s: %s", f.Checker, f.Detail))
		}
	}
	rep.Failures = w.failures
	rep.OK = len(w.failures) == 0
	return rep
}

// runRecovering runs the world, turning a panic in a member (raft's own
// assertions fire on some broken logs, and node's assertions stay on) into
// a failure of the run, so that the history up to it is still checked and
// a campaign goes on with the next seed.
func (w *world) runRecovering() {
	defer func() {
		if r := recover(); r != nil {
			w.fail("member-panic", "%v", r)
		}
	}()
	w.run()
}

func (w *world) run() {
	w.setUpCluster()
	w.setUpClients()
	w.setUpAuth()
	w.scheduleNextFault()
	w.q.schedule(event{at: w.k.SafetyMs * 1e6, kind: evLiveness})
	eventsMax := w.opts.EventsMax
	if eventsMax == 0 {
		eventsMax = defaultEventsMax
	}
	for w.phase != phaseDone {
		e := w.q.next()
		if e == nil {
			w.fail("event-queue", "the event queue ran dry before the run ended")
			return
		}
		if e.at < w.now {
			w.fail("event-queue", "event %s at %d is in the past (now %d)", e.kind, e.at, w.now)
			return
		}
		w.now = e.at
		w.stats.Events++
		if w.stats.Events > eventsMax {
			w.fail("events-bound", "more than %d events: the run does not settle", eventsMax)
			return
		}
		if w.q.Len() > eventsPendingMax {
			w.fail("events-bound", "more than %d pending events", eventsPendingMax)
			return
		}
		w.step(e)
		w.q.release(e)
		if len(w.failures) > 0 {
			return
		}
	}
	w.stats.VirtualNs = w.now
}

func (w *world) step(e *event) {
	w.trace.event(w.now, e)
	switch e.kind {
	case evTick:
		m := w.members[e.member]
		if m.incarnation == e.incarnation {
			w.tick(m)
		}
	case evDeliver:
		w.deliver(w.members[e.member], e)
	case evDiskSync:
		m := w.members[e.member]
		if m.up && m.incarnation == e.incarnation {
			w.diskSynced(m, e.persistSeq)
		}
	case evRequestArrive:
		w.requestArrive(e)
	case evReplyArrive:
		w.replyArrive(e)
	case evWatchRequestArrive:
		w.watchRequestArrive(e)
	case evWatchArrive:
		w.watchArrive(e)
	case evClientNext:
		w.clientNext(w.clients[e.client])
	case evClientTimeout:
		w.clientTimeout(w.clients[e.client], e.opSeq)
	case evFault:
		w.injectFault()
	case evAction:
		e.action()
	case evLiveness:
		w.startLiveness()
	}
	if w.phase == phaseLiveness {
		w.checkLiveness()
	}
}

func (w *world) setUpCluster() {
	var initial []node.Member
	var ids []uint64
	for i := 0; i < w.k.ClusterSize; i++ {
		url := fmt.Sprintf("http://m%d:2380", i)
		id := node.MemberID([]string{url}, "noded-sim", nil)
		initial = append(initial, node.Member{ID: id, PeerURLs: []string{url}})
		ids = append(ids, id)
		w.members = append(w.members, w.newMember(i, url, id))
	}
	w.clusterID = node.ClusterID(ids)
	w.initial = initial
	for _, m := range w.members {
		w.bootstrap(m)
	}
}

// fail records a failure found by the simulator itself (an assertion, a
// bound, the liveness phase), named by what found it: "at <time>:
// <checker>: <detail>".
func (w *world) fail(checker, format string, args ...any) {
	msg := fmt.Sprintf("at %dms: %s: %s", w.now/1e6, checker, fmt.Sprintf(format, args...))
	w.failures = append(w.failures, msg)
	w.tracef("FAIL %s", msg)
}

func (w *world) tracef(format string, args ...any) {
	w.trace.line(w.now, fmt.Sprintf(format, args...))
}

// FailingCheckers names the checkers behind a report's failures, each once,
// in the order they first appear: a linearizability checker's failure reads
// "<checker>: <detail>", one the simulator found itself "at <time>:
// <checker>: <detail>".
func FailingCheckers(r Report) []string {
	var names []string
	for _, f := range r.Failures {
		if rest, ok := strings.CutPrefix(f, "at "); ok {
			if _, after, ok := strings.Cut(rest, "ms: "); ok {
				f = after
			}
		}
		name, _, _ := strings.Cut(f, ": ")
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

package linearizability

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Unknown is the Return time of an operation whose outcome the client never
// learned (a timeout, a lost reply). It is porcupine's convention for an
// interval open to the right.
const Unknown = math.MaxInt64

// Operation is one client request and what the client learned about it.
type Operation struct {
	Client   int   // zero-based client index
	Call     int64 // virtual time (nanoseconds) the client sent the request
	Return   int64 // virtual time the reply arrived, or Unknown
	Request  Request
	Response Response // ignored when Return == Unknown
	// RequestID is the ID the cluster logged the request under, to match
	// CommittedEntry.RequestID. Zero means the request was never proposed
	// under an ID the simulator knows (for example a local read).
	RequestID uint64
}

// Request holds exactly one of its fields.
type Request struct {
	Range       *pb.RangeRequest
	Put         *pb.PutRequest
	DeleteRange *pb.DeleteRangeRequest
	Txn         *pb.TxnRequest
	Compact     *pb.CompactionRequest
	LeaseGrant  *pb.LeaseGrantRequest
	LeaseRevoke *pb.LeaseRevokeRequest
}

// Response is what the client received: Err, or the response matching the
// request's kind.
type Response struct {
	// Err is a failure reported by the cluster (an rpctypes ErrGRPC* value or
	// its client-side twin). How each error is read is in the package doc.
	Err         error
	Range       *pb.RangeResponse
	Put         *pb.PutResponse
	DeleteRange *pb.DeleteRangeResponse
	Txn         *pb.TxnResponse
	Compact     *pb.CompactionResponse
	LeaseGrant  *pb.LeaseGrantResponse
	LeaseRevoke *pb.LeaseRevokeResponse
}

// CommittedEntry is one normal raft entry that the cluster committed, in log
// order, as the simulator reads it from the members' logs at the end of the
// run: the ground truth for what happened. Request is the InternalRaftRequest
// in the entry.
type CommittedEntry struct {
	Index     uint64
	RequestID uint64
	Request   *pb.InternalRaftRequest
	// AppliedAt is the virtual time the first member applied the entry: no
	// client can observe its effect earlier. Zero means unknown.
	AppliedAt int64
}

// KeepAlive is one lease keepalive a client sent and saw answered with a
// live lease (TTL above zero): from then on the client may count on the
// lease living TTLSeconds from Sent.
type KeepAlive struct {
	Client     int
	Lease      int64
	Sent       int64 // virtual time the client sent it
	Return     int64 // virtual time the answer arrived
	TTLSeconds int64 // the TTL in the answer
}

// Clocks bounds how the members' clocks ran against true (virtual) time,
// so that a lease's life can be judged in true time.
type Clocks struct {
	// ShortestSecondNs is the least true time any member's clock took to
	// count one of its own seconds (1e9 for exact clocks; 833_333_333 for
	// one 20% fast). A leader whose clock runs fast ends a TTL early in
	// true time by that factor, so the checker allows it. Zero: leases are
	// not judged in true time.
	ShortestSecondNs int64
	// Faults are the spans of true time in which some member's clock did
	// not run at a bounded rate: a jump forward (a span of one instant), a
	// stall (from when it stopped until its member could have noticed
	// again that it lost its quorum). A renewal whose TTL overlaps one is
	// not judged in true time: a leader whose clock stands still keeps
	// answering keepalives after its successor took over.
	Faults []TimeSpan
}

// TimeSpan is [From, To] in virtual nanoseconds.
type TimeSpan struct {
	From, To int64
}

// WatchHistory is the history of one watcher as one client saw it.
type WatchHistory struct {
	Client int
	Member uint64
	Create *pb.WatchCreateRequest
	// Responses are in arrival order: the created reply, events, progress
	// notifications and the cancel reply, as they came.
	Responses []WatchReceived
	// RequestedProgressAt are the times the client sent a progress request on
	// this watcher's stream.
	RequestedProgressAt []int64
}

// WatchReceived is one watch response and the virtual time it arrived.
type WatchReceived struct {
	Time int64
	Resp *pb.WatchResponse
}

// LeaseEventKind names what a member reported about a lease.
type LeaseEventKind uint8

const (
	// LeaseGranted: the leader applied a grant of the lease.
	LeaseGranted LeaseEventKind = iota + 1
	// LeaseKeepAliveAcked: the leader refreshed the lease for a keepalive.
	LeaseKeepAliveAcked
	// LeaseBecameLeader: the member won leadership (Lease is 0).
	LeaseBecameLeader
	// LeaseExpiryProposed: the leader proposed a revoke because the lease
	// expired by its clock.
	LeaseExpiryProposed
	// LeaseTakenOver: a member that just won leadership took the lease over
	// from the applied state, with TTLTicks from that tick on. It reports
	// leases no leader may ever have reported granting (a leader that
	// crashed before applying its own grant).
	LeaseTakenOver
)

func (k LeaseEventKind) String() string {
	switch k {
	case LeaseGranted:
		return "Granted"
	case LeaseKeepAliveAcked:
		return "KeepAliveAcked"
	case LeaseBecameLeader:
		return "BecameLeader"
	case LeaseExpiryProposed:
		return "ExpiryProposed"
	case LeaseTakenOver:
		return "TakenOver"
	}
	return fmt.Sprintf("LeaseEventKind(%d)", uint8(k))
}

// LeaseEvent is instrumentation from a member about leases, on the member's
// local clock: the number of ticks it had received.
type LeaseEvent struct {
	Member    uint64
	LocalTick int64
	Lease     int64
	Kind      LeaseEventKind
	// TTLTicks is the lease's TTL in this member's ticks for Granted,
	// KeepAliveAcked and TakenOver, and 0 otherwise.
	TTLTicks int64
	// ElectionTicks is the member's election timeout in ticks. It is shown
	// in failures: the rule checked is etcd's floor (a new leader gives every
	// lease at least its TTL from BecameLeader), and etcd itself adds the
	// election timeout on top of that floor.
	ElectionTicks int64
}

func (e LeaseEvent) String() string {
	return fmt.Sprintf("member %x tick %d %s lease %d ttl %d ticks", e.Member, e.LocalTick, e.Kind, e.Lease, e.TTLTicks)
}

// Input is everything the checkers read from one run.
type Input struct {
	History   []Operation
	Committed []CommittedEntry
	Watches   []WatchHistory
	Leases    []LeaseEvent
	// KeepAlives are the answered keepalives; with the answered grants in
	// History they are what the lease-expiry-time checker holds expiries to.
	KeepAlives []KeepAlive
	Clocks     Clocks
	// MinLeaseTTLSeconds is the cluster's minimum lease TTL; a grant below it
	// is raised to it. Zero means unknown: a granted TTL is then only checked
	// to be at least the one asked for.
	MinLeaseTTLSeconds int64
	// MaxTxnOps is the cluster's --max-txn-ops; zero means etcd's 128.
	MaxTxnOps int
	// Locks are the workload's locks, checked by the lock-fencing checker.
	Locks []Lock
}

// DefaultTimeout bounds porcupine's search when Options.Timeout is zero,
// as etcd's robustness suite does.
const DefaultTimeout = 5 * time.Minute

// defaultMaxFailuresPerChecker keeps a broken run's report readable.
const defaultMaxFailuresPerChecker = 20

// defaultMaxTxnOps is etcd's --max-txn-ops default.
const defaultMaxTxnOps = 128

// Options tune Check.
type Options struct {
	// Timeout bounds porcupine's search (wall clock, inside porcupine); zero
	// means DefaultTimeout. A search that runs out is reported as a failure
	// that says so, the one output that can differ between runs.
	Timeout time.Duration
	// MaxFailuresPerChecker caps the failures kept per checker; zero means
	// 20. The count of the ones left out is kept.
	MaxFailuresPerChecker int
}

// Failure is one violation.
type Failure struct {
	Checker string
	Detail  string
}

func (f Failure) String() string { return f.Checker + ": " + f.Detail }

// Stats counts what the checkers looked at.
type Stats struct {
	Operations       int   // operations in the history
	Linearized       int   // operations handed to porcupine, committed-only entries included
	UnknownApplied   int   // outcome unknown, found in the committed log: applied
	UnknownDropped   int   // outcome unknown, absent from the committed log: never happened
	CommittedOnly    int   // committed entries no client operation claims (lease expiry, ...)
	Refused          int   // refused by validation before raft
	ReplayedReads    int   // reads checked against the replayed state
	Committed        int   // committed entries replayed
	FinalRevision    int64 // revision after replaying the committed log
	Watches          int
	WatchEvents      int
	LeaseEvents      int
	FailuresOmitted  int // failures beyond Options.MaxFailuresPerChecker
	PorcupineTimeout bool
}

// Result is the verdict of Check.
type Result struct {
	OK       bool
	Failures []Failure
	Stats    Stats
}

// String renders the counts on one line.
func (s Stats) String() string {
	str := fmt.Sprintf("%d operations (%d linearized, %d unknown applied, %d unknown dropped, %d refused), "+
		"%d committed entries (%d without client), final revision %d, %d replayed reads, %d watches (%d events), %d lease events",
		s.Operations, s.Linearized, s.UnknownApplied, s.UnknownDropped, s.Refused,
		s.Committed, s.CommittedOnly, s.FinalRevision, s.ReplayedReads, s.Watches, s.WatchEvents, s.LeaseEvents)
	if s.PorcupineTimeout {
		str += ", porcupine timed out"
	}
	return str
}

// String renders the result deterministically: a summary line, then one line
// per failure.
func (r Result) String() string {
	var b strings.Builder
	verdict := "OK"
	if !r.OK {
		verdict = fmt.Sprintf("FAILED (%d failures", len(r.Failures)+r.Stats.FailuresOmitted)
		if r.Stats.FailuresOmitted > 0 {
			verdict += fmt.Sprintf(", %d not shown", r.Stats.FailuresOmitted)
		}
		verdict += ")"
	}
	fmt.Fprintf(&b, "linearizability: %s: %s\n", verdict, r.Stats)
	for _, f := range r.Failures {
		b.WriteString("  ")
		b.WriteString(f.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// WriteHistory writes the history as the checkers read it, one operation a
// line (client, interval in virtual nanoseconds, request, outcome), then
// the committed log, one entry a line: the text a failing run keeps beside
// porcupine's visualization.
func WriteHistory(in Input, w io.Writer) error {
	run := newCheckRun(in, Options{})
	for _, op := range run.ops {
		if _, err := fmt.Fprintf(w, "%s -> %s\n", op, op.outcome()); err != nil {
			return err
		}
	}
	for _, e := range run.replay.entries {
		if _, err := fmt.Fprintf(w, "committed %d req=%x %s -> %s\n", e.index, e.requestID, e.req, e.resp); err != nil {
			return err
		}
	}
	return nil
}

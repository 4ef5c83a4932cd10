package linearizability

import (
	"fmt"
)

// Checker names, as they appear in failures.
const (
	checkerHistory       = "history"
	checkerKV            = "kv-linearizability"
	checkerDurability    = "durability"
	checkerValidation    = "validation"
	checkerReads         = "replay-reads"
	checkerLeaseExpiry   = "lease-expiry"
	checkerLeaseTime     = "lease-expiry-time"
	checkerLeaseRevoke   = "lease-revoke"
	checkerWatchOrdered  = "watch-ordered"
	checkerWatchUnique   = "watch-unique"
	checkerWatchAtomic   = "watch-atomic"
	checkerWatchReliable = "watch-reliable"
	checkerWatchResume   = "watch-resumable"
	checkerWatchBookmark = "watch-bookmarkable"
	checkerWatchFilter   = "watch-filter"
	checkerWatchPrevKV   = "watch-prevkv"
	checkerWatchIsCreate = "watch-iscreate"
	checkerWatchCompact  = "watch-compaction"
	checkerWatchCancel   = "watch-cancel"
	checkerWatchProgress = "watch-progress"
	checkerWatchHeader   = "watch-header"
)

// preparedOp is one history operation in the checkers' form.
type preparedOp struct {
	index    int // position in Input.History
	client   int
	call     int64
	ret      int64 // Input's Return, Unknown included
	original Operation
	req      *request
	// obs is what the client learned; nil when it learned nothing: Return is
	// Unknown or the error is indeterminate.
	obs *response
	// entries are the positions in the committed log of entries logged under
	// this operation's RequestID.
	entries []int
}

func (op *preparedOp) String() string {
	ret := "unknown"
	if op.ret != Unknown {
		ret = fmt.Sprint(op.ret)
	}
	return fmt.Sprintf("client %d op #%d [%d, %s] %s", op.client, op.index, op.call, ret, op.req)
}

// outcome renders what the client observed.
func (op *preparedOp) outcome() string {
	if op.obs == nil {
		if op.original.Return != Unknown && op.original.Response.Err != nil {
			return "indeterminate error " + fmt.Sprintf("%q", op.original.Response.Err.Error())
		}
		return "unknown outcome"
	}
	return op.obs.String()
}

// report collects failures, capped per checker.
type report struct {
	maxPerChecker int
	failures      []Failure
	perChecker    map[string]int
	omitted       int
}

func (r *report) add(checker, format string, args ...any) {
	r.perChecker[checker]++
	if r.perChecker[checker] > r.maxPerChecker {
		r.omitted++
		return
	}
	r.failures = append(r.failures, Failure{Checker: checker, Detail: fmt.Sprintf(format, args...)})
}

// checkRun is one Check: the prepared input and what the checkers share.
type checkRun struct {
	in        Input
	opts      Options
	maxTxnOps int
	ops       []*preparedOp
	byID      map[uint64]*preparedOp
	replay    *replay
	match     matchConfig
	report    *report
	stats     Stats
	// rawIntervals leaves porcupine the intervals as recorded, without the
	// revision tightening; the tests use it to show tightening is exact.
	rawIntervals bool
}

// Check runs every checker over in. Its output is the same for the same input
// (a porcupine search that runs out of time, reported as such, excepted).
func Check(in Input, opts Options) Result {
	run := newCheckRun(in, opts)
	run.checkDurability()
	run.checkKV()
	run.checkReads()
	run.checkWatches()
	run.checkLeases()
	run.checkLeaseTimes()
	run.checkLocks()
	run.stats.FailuresOmitted = run.report.omitted
	return Result{
		OK:       len(run.report.failures) == 0,
		Failures: run.report.failures,
		Stats:    run.stats,
	}
}

func newCheckRun(in Input, opts Options) *checkRun {
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxFailuresPerChecker <= 0 {
		opts.MaxFailuresPerChecker = defaultMaxFailuresPerChecker
	}
	run := &checkRun{
		in:        in,
		opts:      opts,
		maxTxnOps: in.MaxTxnOps,
		byID:      map[uint64]*preparedOp{},
		match:     matchConfig{minLeaseTTL: in.MinLeaseTTLSeconds},
		report:    &report{maxPerChecker: opts.MaxFailuresPerChecker, perChecker: map[string]int{}},
	}
	if run.maxTxnOps <= 0 {
		run.maxTxnOps = defaultMaxTxnOps
	}
	run.replay = newReplay(in.Committed, in.MinLeaseTTLSeconds)
	run.stats.Operations = len(in.History)
	run.stats.Committed = len(in.Committed)
	run.stats.FinalRevision = run.replay.final.revision
	run.prepare()
	return run
}

// prepare converts the history and checks the simulator kept the contract:
// one request per operation, a response for every learned outcome, calls
// before returns, each client's operations one after another, request IDs
// unique.
func (run *checkRun) prepare() {
	lastReturn := map[int]*preparedOp{}
	for i, o := range run.in.History {
		req, err := convertRequest(o.Request)
		if err != nil {
			run.report.add(checkerHistory, "client %d op #%d: %v", o.Client, i, err)
			continue
		}
		op := &preparedOp{index: i, client: o.Client, call: o.Call, ret: o.Return, original: o, req: req}
		if o.Return != Unknown {
			obs, err := convertResponse(o.Response, req)
			if err != nil {
				run.report.add(checkerHistory, "%s: %v", op, err)
				continue
			}
			if obs.err != errIndeterminate {
				op.obs = obs
			}
			if o.Return < o.Call {
				run.report.add(checkerHistory, "%s: returns before it is called", op)
			}
		}
		if prev := lastReturn[o.Client]; prev != nil && prev.ret != Unknown && o.Call < prev.ret {
			run.report.add(checkerHistory, "%s: called before the same client's op #%d returned at %d", op, prev.index, prev.ret)
		}
		lastReturn[o.Client] = op
		if o.RequestID != 0 {
			if other := run.byID[o.RequestID]; other != nil {
				run.report.add(checkerHistory, "%s: request ID %d already used by op #%d", op, o.RequestID, other.index)
			} else {
				run.byID[o.RequestID] = op
				op.entries = run.replay.byRequestID[o.RequestID]
			}
		}
		run.ops = append(run.ops, op)
	}
}

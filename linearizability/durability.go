package linearizability

import (
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"
)

// checkDurability holds the history against the committed log:
//   - a request is logged at most once (else it was applied twice);
//   - every acknowledged write is logged, under the request the client sent,
//     and replaying the log gives the response the client saw: so the write
//     was applied at the revision its header reported, and nothing the
//     client was told happened was lost;
//   - a request refused before raft is not logged, and is invalid;
//   - a request the client sent after another returned is logged after it.
func (run *checkRun) checkDurability() {
	rp := run.replay
	for _, id := range slices.Sorted(maps.Keys(rp.byRequestID)) {
		positions := rp.byRequestID[id]
		if len(positions) < 2 {
			continue
		}
		indexes := make([]uint64, len(positions))
		for i, p := range positions {
			indexes[i] = rp.entries[p].index
		}
		who := fmt.Sprintf("request %d (%s)", id, rp.entries[positions[0]].req)
		if op := run.byID[id]; op != nil {
			who = op.String()
		}
		run.report.add(checkerDurability, "%s applied %d times: committed at raft indexes %v", who, len(positions), indexes)
	}
	for _, op := range run.ops {
		run.checkValidation(op)
		if len(op.entries) > 0 {
			e := rp.entries[op.entries[0]]
			if diff := sameRequest(op, e); diff != "" {
				run.report.add(checkerDurability, "%s: the committed entry at raft index %d logs a different request: %s", op, e.index, diff)
				continue
			}
		}
		if op.obs == nil {
			continue
		}
		if op.obs.err.refusedBeforeRaft() {
			if len(op.entries) > 0 {
				run.report.add(checkerDurability, "%s was refused with %s, a refusal before raft, yet it is committed at raft index %d",
					op, op.obs.err, rp.entries[op.entries[0]].index)
			}
			continue
		}
		if !op.req.isWrite() {
			continue
		}
		if len(op.entries) == 0 {
			if op.obs.err == errNone {
				run.report.add(checkerDurability, "acknowledged write lost: %s returned %s, but request %d is not in the committed log",
					op, op.obs, op.original.RequestID)
			}
			continue
		}
		e := rp.entries[op.entries[0]]
		if matches(op.req, e.resp, op.obs, &run.match, true) {
			continue
		}
		if e.resp.err == errLeaseNotFound && op.obs.err == errNone && (op.req.kind == kindPut || op.req.kind == kindTxn) {
			run.report.add(checkerLeaseRevoke, "%s attached a lease that was not alive when it applied at raft index %d (state %s): acknowledged %s, must fail LeaseNotFound",
				op, e.index, e.before, op.obs)
			continue
		}
		run.report.add(checkerDurability, "%s acknowledged %s, but replaying the committed log applies it at raft index %d with %s",
			op, op.obs, e.index, e.resp)
	}
	run.checkLogOrder()
}

// checkValidation holds refusals before raft to the request: an operation
// refused that way must break the rule named, and one that did not fail
// validation must be valid.
func (run *checkRun) checkValidation(op *preparedOp) {
	allowed := validationErrors(op.req, run.maxTxnOps)
	okAllowed := len(allowed) == 0 || slices.Contains(allowed, errNone)
	var got errorKind
	if op.obs != nil {
		got = op.obs.err
	}
	switch {
	case op.obs == nil:
		return
	case got == errRequestTooLarge:
		// The size limit is not in the input; the refusal is taken at its word.
	case got.refusedBeforeRaft():
		if !slices.Contains(allowed, got) {
			run.report.add(checkerValidation, "%s was refused with %s, but validation allows %s", op, got, describeErrors(allowed))
		}
	case !okAllowed:
		run.report.add(checkerValidation, "%s answered %s, but validation must refuse it with %s", op, op.obs, describeErrors(allowed))
	}
}

func describeErrors(errs []errorKind) string {
	if len(errs) == 0 {
		return "nothing (the request is valid)"
	}
	return fmt.Sprint(errs)
}

// sameRequest compares the client's request with the one logged under its
// ID and says how they differ; "" when they agree. A lease grant that let
// the server pick the ID agrees with any ID.
func sameRequest(op *preparedOp, e replayedEntry) string {
	q, raw := op.original.Request, e.raw
	var mine, logged proto.Message
	switch {
	case q.Range != nil:
		mine, logged = q.Range, raw.GetRange()
	case q.Put != nil:
		mine, logged = q.Put, raw.GetPut()
	case q.DeleteRange != nil:
		mine, logged = q.DeleteRange, raw.GetDeleteRange()
	case q.Txn != nil:
		mine, logged = q.Txn, raw.GetTxn()
	case q.Compact != nil:
		mine, logged = q.Compact, raw.GetCompaction()
	case q.LeaseGrant != nil:
		if q.LeaseGrant.GetID() == 0 && raw.GetLeaseGrant() != nil {
			if raw.GetLeaseGrant().GetTTL() == q.LeaseGrant.GetTTL() {
				return ""
			}
		}
		mine, logged = q.LeaseGrant, raw.GetLeaseGrant()
	case q.LeaseRevoke != nil:
		mine, logged = q.LeaseRevoke, raw.GetLeaseRevoke()
	}
	if proto.Equal(mine, logged) {
		return ""
	}
	return fmt.Sprintf("the client sent %s, the log holds %s", op.req, e.req)
}

// checkLogOrder: a request sent after another returned cannot be logged
// before it. Reported once per run: one inversion makes many.
func (run *checkRun) checkLogOrder() {
	entries := run.replay.entries
	claim := make([]*preparedOp, len(entries))
	for _, op := range run.ops {
		if len(op.entries) > 0 {
			claim[op.entries[0]] = op
		}
	}
	var earliestReturn *preparedOp // among later-logged ops with a learned outcome
	for pos := len(entries) - 1; pos >= 0; pos-- {
		op := claim[pos]
		if op == nil {
			continue
		}
		if earliestReturn != nil && op.call > earliestReturn.ret {
			run.report.add(checkerDurability, "log order contradicts real time: %s was sent after %s returned, yet it is logged first (raft index %d before %d)",
				op, earliestReturn, entries[pos].index, entries[earliestReturn.entries[0]].index)
			return
		}
		if op.obs != nil && !op.obs.err.refusedBeforeRaft() && (earliestReturn == nil || op.ret < earliestReturn.ret) {
			earliestReturn = op
		}
	}
}

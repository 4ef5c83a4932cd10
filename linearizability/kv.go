package linearizability

import (
	"cmp"
	"fmt"
	"io"
	"slices"

	"github.com/anishathalye/porcupine"
)

// The KV linearizability check: porcupine searches for an order of the
// operations, each placed inside its [Call, Return] interval, in which the
// model (apply) gives every observed response.
//
// Operations whose outcome the client never learned are resolved through the
// committed log, as etcd's robustness suite patches its history from the WAL:
// an unknown write that is not in the log never happened and is dropped; one
// that is in the log happened, and is placed with any response. Committed
// entries no client claims (lease expiry, compaction by the cluster) happened
// too and are added the same way. Because writes take effect in log order,
// such an operation cannot take effect after an operation logged later has
// returned, nor before one logged earlier was called; its interval is cut to
// that, which keeps porcupine's search narrow.

// modelInput is a porcupine input: the request and, for failure text, the
// operation it came from (nil for a committed entry no client claims).
type modelInput struct {
	req   *request
	op    *preparedOp
	entry int // committed position, for an entry no client claims
}

// modelOutput is a porcupine output; resp is nil when any response is
// allowed (the outcome was never learned).
type modelOutput struct {
	resp *response
}

func kvModel(match *matchConfig, minLeaseTTL int64) porcupine.Model {
	cfg := &applyConfig{minLeaseTTL: minLeaseTTL}
	return porcupine.Model{
		Init: func() any { return initialState() },
		Step: func(st, in, out any) (bool, any) {
			s := st.(*state)
			input := in.(*modelInput)
			next, exp := apply(s, input.req, cfg, nil)
			obs := out.(*modelOutput).resp
			if obs != nil && !matches(input.req, exp, obs, match, true) {
				return false, nil
			}
			return true, next
		},
		Equal: func(a, b any) bool { return a.(*state).equal(b.(*state)) },
		Hash:  func(st any) uint64 { return st.(*state).hash() },
		DescribeOperation: func(in, out any) string {
			input := in.(*modelInput)
			return input.req.String() + " -> " + out.(*modelOutput).resp.String()
		},
		DescribeState: func(st any) string { return st.(*state).String() },
	}
}

// kvHistory builds porcupine's history. It counts what it resolves and
// drops into stats.
func (run *checkRun) kvHistory() []porcupine.Operation {
	entries := run.replay.entries
	// Who claims each committed position, and the bounds on when it can take
	// effect: after every earlier-logged op was called, before every
	// later-logged op with a learned outcome returned.
	claim := make([]*preparedOp, len(entries))
	for _, op := range run.ops {
		if len(op.entries) > 0 {
			claim[op.entries[0]] = op
		}
	}
	earliest := make([]int64, len(entries)) // max call of claimed entries before
	var maxCall int64
	for pos := range entries {
		earliest[pos] = maxCall
		if op := claim[pos]; op != nil {
			maxCall = max(maxCall, op.call)
		}
	}
	latest := make([]int64, len(entries)) // min return of claimed, learned entries after
	minReturn := int64(Unknown)
	for pos := len(entries) - 1; pos >= 0; pos-- {
		latest[pos] = minReturn
		if op := claim[pos]; op != nil && op.obs != nil && !op.obs.err.refusedBeforeRaft() {
			minReturn = min(minReturn, op.ret)
		}
	}

	clients := 0
	for _, op := range run.ops {
		clients = max(clients, op.client+1)
	}
	var history []porcupine.Operation
	add := func(client int, call, ret int64, input *modelInput, resp *response) {
		history = append(history, porcupine.Operation{
			ClientId: client, Call: call, Return: max(ret, call),
			Input: input, Output: &modelOutput{resp: resp},
		})
	}
	for _, op := range run.ops {
		switch {
		case op.obs != nil && op.obs.err.refusedBeforeRaft():
			run.stats.Refused++
			if len(op.entries) > 0 && op.req.isWrite() {
				// Refused, yet logged: the durability check reports it; it
				// happened all the same.
				add(op.client, op.call, latest[op.entries[0]], &modelInput{req: run.modelRequest(op), op: op}, nil)
			}
		case !op.req.isWrite():
			if op.obs == nil {
				run.stats.UnknownDropped++
			} else if !op.req.isSerializable() {
				add(op.client, op.call, op.ret, &modelInput{req: op.req, op: op}, op.obs)
			}
		case op.obs != nil:
			add(op.client, op.call, op.ret, &modelInput{req: run.modelRequest(op), op: op}, op.obs)
		case len(op.entries) > 0:
			run.stats.UnknownApplied++
			add(op.client, op.call, latest[op.entries[0]], &modelInput{req: run.modelRequest(op), op: op}, nil)
		default:
			run.stats.UnknownDropped++
		}
	}
	// Committed entries no client claims, and second applications of one
	// request (reported by the durability check), happened all the same.
	for pos, e := range entries {
		if claim[pos] != nil || !e.req.isWrite() {
			continue
		}
		run.stats.CommittedOnly++
		add(clients, earliest[pos], latest[pos], &modelInput{req: e.req, entry: pos}, nil)
	}
	run.stats.Linearized = len(history)
	return history
}

// modelRequest is the request to step for an operation resolved through the
// log: the client's, except that a lease grant asking the server to pick an
// ID takes the ID the server logged.
func (run *checkRun) modelRequest(op *preparedOp) *request {
	if op.req.kind != kindLeaseGrant || op.req.leaseID != 0 {
		return op.req
	}
	if op.obs != nil && op.obs.err == errNone {
		r := *op.req
		r.leaseID = op.obs.leaseID
		return &r
	}
	if len(op.entries) > 0 {
		if logged := run.replay.entries[op.entries[0]].req; logged.kind == kindLeaseGrant {
			return logged
		}
	}
	return op.req
}

func (run *checkRun) checkKV() {
	history := run.kvHistory()
	model := kvModel(&run.match, run.in.MinLeaseTTLSeconds)
	result := porcupine.CheckOperationsTimeout(model, history, run.opts.Timeout)
	switch result {
	case porcupine.Ok:
		return
	case porcupine.Unknown:
		run.stats.PorcupineTimeout = true
		run.report.add(checkerKV, "undecided: porcupine's search ran out of its %s timeout on %d operations", run.opts.Timeout, len(history))
		return
	}
	run.report.add(checkerKV, "%s", run.explainKV(model, history))
}

// explainKV says which operation could not be placed. It takes porcupine's
// longest linearizable prefix (ties broken by content, so the text is the
// same on every run), replays it, and names the pending operation with a
// learned outcome that must take effect first: the one whose interval ends
// earliest.
func (run *checkRun) explainKV(model porcupine.Model, history []porcupine.Operation) string {
	_, info := porcupine.CheckOperationsVerbose(model, history, run.opts.Timeout)
	var longest []int
	for _, partition := range info.PartialLinearizations() {
		for _, seq := range partition {
			if len(seq) > len(longest) || (len(seq) == len(longest) && slices.Compare(seq, longest) < 0) {
				longest = seq
			}
		}
	}
	s := initialState()
	placed := make([]bool, len(history))
	for _, id := range longest {
		placed[id] = true
		ok, next := model.Step(s, history[id].Input, history[id].Output)
		if !ok {
			break
		}
		s = next.(*state)
	}
	blocked := -1
	for id, h := range history {
		if placed[id] || h.Output.(*modelOutput).resp == nil {
			continue
		}
		if blocked < 0 || cmp.Or(cmp.Compare(h.Return, history[blocked].Return), cmp.Compare(h.Call, history[blocked].Call)) < 0 {
			blocked = id
		}
	}
	if blocked < 0 {
		return fmt.Sprintf("not linearizable: %d operations, longest linearizable prefix %d, and no operation with a learned outcome left to blame", len(history), len(longest))
	}
	input := history[blocked].Input.(*modelInput)
	_, exp := apply(s, input.req, &applyConfig{minLeaseTTL: run.in.MinLeaseTTLSeconds}, nil)
	return fmt.Sprintf("not linearizable: %s observed %s; after the longest linearizable prefix (%d of %d operations) the state is %s, where the model answers %s",
		input.op, input.op.outcome(), len(longest), len(history), s, exp)
}

// VisualizeKV writes porcupine's HTML visualization of the KV history in to
// w, as porcupine sees it after unknown outcomes are resolved.
func VisualizeKV(in Input, w io.Writer) error {
	run := newCheckRun(in, Options{})
	history := run.kvHistory()
	model := kvModel(&run.match, in.MinLeaseTTLSeconds)
	_, info := porcupine.CheckOperationsVerbose(model, history, run.opts.Timeout)
	return porcupine.Visualize(model, info, w)
}

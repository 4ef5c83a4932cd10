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
// that is in the log happened, whatever its response, and must take effect
// where the log put it (see modelOutput). Committed entries no client claims
// (lease expiry, compaction by the cluster) happened too and are added the
// same way. Because writes take effect in log order, such an operation cannot
// take effect after an operation logged later has returned, nor before one
// logged earlier was called; its interval is cut to that. Every interval is
// then cut by the revision order its response implies (tightenByRevision),
// which keeps porcupine's search linear without changing its answer.

// modelInput is a porcupine input: the request and, for failure text, the
// operation it came from (nil for a committed entry no client claims).
type modelInput struct {
	req   *request
	op    *preparedOp
	entry int // committed position, for an entry no client claims
}

// modelOutput is a porcupine output: the response the client learned, if it
// learned one, and, for a write in the committed log, what the replay says
// of its entry (persisted): the model must apply it at the same revision,
// moving the revision the same way (and, with no learned response, with the
// same error). etcd's robustness suite
// pins a persisted request to the revision its watch events show in the
// same way. Pinning is sound: in a correct run the entry applied exactly
// there. It keeps porcupine from trying every place an unacknowledged write
// could go.
type modelOutput struct {
	resp      *response
	persisted *replayedEntry
}

func (o *modelOutput) String() string {
	if o.resp == nil && o.persisted != nil {
		if o.persisted.resp.err != errNone {
			return fmt.Sprintf("unknown (the log says: error %s at rev %d)", o.persisted.resp.err, o.persisted.before.revision)
		}
		return fmt.Sprintf("unknown (the log says: applied at rev %d, to rev %d)", o.persisted.before.revision, o.persisted.after.revision)
	}
	return o.resp.String()
}

// allows reports whether stepping from s to next with response exp is one
// the output allows.
func (o *modelOutput) allows(req *request, s, next *state, exp *response, match *matchConfig) bool {
	if p := o.persisted; p != nil {
		if s.revision != p.before.revision || next.revision != p.after.revision {
			return false
		}
		if o.resp == nil {
			return exp.err == p.resp.err
		}
	}
	return o.resp == nil || matches(req, exp, o.resp, match, true)
}

func kvModel(match *matchConfig, minLeaseTTL int64) porcupine.Model {
	cfg := &applyConfig{minLeaseTTL: minLeaseTTL}
	return porcupine.Model{
		Init: func() any { return initialState() },
		Step: func(st, in, out any) (bool, any) {
			s := st.(*state)
			input := in.(*modelInput)
			next, exp := apply(s, input.req, cfg, nil)
			if !out.(*modelOutput).allows(input.req, s, next, exp, match) {
				return false, nil
			}
			return true, next
		},
		Equal: func(a, b any) bool { return a.(*state).equal(b.(*state)) },
		Hash:  func(st any) uint64 { return st.(*state).hash() },
		DescribeOperation: func(in, out any) string {
			input := in.(*modelInput)
			return input.req.String() + " -> " + out.(*modelOutput).String()
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
	addPersisted := func(client int, call int64, pos int, input *modelInput) {
		history = append(history, porcupine.Operation{
			ClientId: client, Call: call, Return: max(latest[pos], call),
			Input: input, Output: &modelOutput{persisted: &entries[pos]},
		})
	}
	for _, op := range run.ops {
		switch {
		case op.obs != nil && op.obs.err.refusedBeforeRaft():
			run.stats.Refused++
			if len(op.entries) > 0 && op.req.isWrite() {
				// Refused, yet logged: the durability check reports it; it
				// happened all the same.
				addPersisted(op.client, op.call, op.entries[0], &modelInput{req: run.modelRequest(op), op: op})
			}
		case !op.req.isWrite():
			if op.obs == nil {
				run.stats.UnknownDropped++
			} else if !op.req.isSerializable() {
				add(op.client, op.call, op.ret, &modelInput{req: op.req, op: op}, op.obs)
			}
		case op.obs != nil:
			add(op.client, op.call, op.ret, &modelInput{req: run.modelRequest(op), op: op}, op.obs)
			if len(op.entries) > 0 {
				history[len(history)-1].Output.(*modelOutput).persisted = &entries[op.entries[0]]
			}
		case len(op.entries) > 0:
			run.stats.UnknownApplied++
			addPersisted(op.client, op.call, op.entries[0], &modelInput{req: run.modelRequest(op), op: op})
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
		addPersisted(clients, earliest[pos], pos, &modelInput{req: e.req, entry: pos})
	}
	run.stats.Linearized = len(history)
	if !run.rawIntervals {
		slots := tightenByRevision(history)
		orderTies(history, slots)
	}
	return history
}

// revisionSlot places an operation on the revision line: a write that moved
// the store to revision rev takes effect exactly at that move (slot 2*rev);
// any other operation that saw revision rev takes effect while the store is
// at rev, after that move and before the next (slot 2*rev+1).
type revisionSlot int64

// slotOf returns the slot every valid linearization must give op, if the
// output tells it: a learned response with a header revision, or an entry
// pinned to the log. A write whose response does not show whether it moved
// the revision (a lease revoke, say) gets the later slot of its revision,
// which holds either way.
func slotOf(input *modelInput, output *modelOutput) (revisionSlot, bool) {
	if p := output.persisted; p != nil {
		if p.after.revision > p.before.revision {
			return revisionSlot(2 * p.after.revision), true
		}
		return revisionSlot(2*p.before.revision + 1), true
	}
	r := output.resp
	if r == nil || r.err != errNone || r.revision <= 0 {
		return 0, false
	}
	if movedRevision(input.req, r) {
		return revisionSlot(2 * r.revision), true
	}
	return revisionSlot(2*r.revision + 1), true
}

// movedRevision reports whether a learned response shows its write moved the
// revision: a put, a delete that deleted, a txn whose branch did either.
func movedRevision(req *request, r *response) bool {
	switch req.kind {
	case kindPut:
		return true
	case kindDeleteRange:
		return r.deleted > 0
	case kindTxn:
		if r.txn == nil {
			return false
		}
		branch := req.txn.success
		if !r.txn.succeeded {
			branch = req.txn.failure
		}
		for i, sub := range branch {
			if i < len(r.txn.responses) && r.txn.responses[i].kind == sub.kind && movedRevision(sub, r.txn.responses[i]) {
				return true
			}
		}
	}
	return false
}

// tightenByRevision narrows intervals by the revision line. In every valid
// linearization an operation in a later slot takes effect after every
// operation in an earlier slot, so it cannot take effect before any of them
// was called, and an operation in an earlier slot cannot take effect after
// any later one returned. Cutting intervals to that removes no valid
// linearization (the check's answer is unchanged) and spares porcupine
// from trying a write before a read that saw the revision before it, the
// choice that otherwise makes it backtrack at every step under load.
// An operation whose cut interval would be empty keeps its own: the history
// is not linearizable, and porcupine says so from the original.
func tightenByRevision(history []porcupine.Operation) map[int]revisionSlot {
	type slotted struct {
		slot revisionSlot
		id   int
	}
	var ops []slotted
	slots := map[int]revisionSlot{}
	for id, h := range history {
		if slot, ok := slotOf(h.Input.(*modelInput), h.Output.(*modelOutput)); ok {
			ops = append(ops, slotted{slot, id})
			slots[id] = slot
		}
	}
	slices.SortStableFunc(ops, func(a, b slotted) int { return cmp.Compare(a.slot, b.slot) })
	calls := make([]int64, len(ops))   // latest call among earlier slots
	returns := make([]int64, len(ops)) // earliest return among later slots
	var maxCall int64
	for i := 0; i < len(ops); {
		j := i
		for j < len(ops) && ops[j].slot == ops[i].slot {
			calls[j] = maxCall
			j++
		}
		for k := i; k < j; k++ {
			maxCall = max(maxCall, history[ops[k].id].Call)
		}
		i = j
	}
	minReturn := int64(Unknown)
	for j := len(ops); j > 0; {
		i := j - 1
		for i > 0 && ops[i-1].slot == ops[j-1].slot {
			i--
		}
		for k := i; k < j; k++ {
			returns[k] = minReturn
		}
		for k := i; k < j; k++ {
			minReturn = min(minReturn, history[ops[k].id].Return)
		}
		j = i
	}
	for k, o := range ops {
		h := &history[o.id]
		call, ret := max(h.Call, calls[k]), min(h.Return, returns[k])
		if call <= ret {
			h.Call, h.Return = call, ret
		}
	}
	return slots
}

// orderTies breaks ties between calls at the same time by revision slot, so
// that porcupine, which tries pending calls in time order, tries a read of
// revision R before the write that moves the store past R. Tightening makes
// such ties common. Times are first replaced by their rank (porcupine reads
// only their order), then spread: a call at rank t becomes t*k plus its
// place among the calls at t, a return at rank t becomes t*k+k-1, so every
// call stays before, after or concurrent with every return exactly as it
// was.
func orderTies(history []porcupine.Operation, slots map[int]revisionSlot) {
	var times []int64
	for _, h := range history {
		times = append(times, h.Call)
		if h.Return != Unknown {
			times = append(times, h.Return)
		}
	}
	slices.Sort(times)
	times = slices.Compact(times)
	rank := func(t int64) int64 {
		i, _ := slices.BinarySearch(times, t)
		return int64(i)
	}
	k := int64(len(history) + 1)
	byCall := make([]int, len(history))
	for i := range byCall {
		byCall[i] = i
	}
	slices.SortStableFunc(byCall, func(a, b int) int {
		if c := cmp.Compare(history[a].Call, history[b].Call); c != 0 {
			return c
		}
		sa, pa := slots[a]
		sb, pb := slots[b]
		switch {
		case pa && pb:
			return cmp.Compare(sa, sb)
		case pa:
			return -1
		case pb:
			return 1
		}
		return 0
	})
	calls := make([]int64, len(history))
	for i := 0; i < len(byCall); {
		j := i
		for j < len(byCall) && history[byCall[j]].Call == history[byCall[i]].Call {
			calls[byCall[j]] = rank(history[byCall[j]].Call)*k + int64(j-i)
			j++
		}
		i = j
	}
	for id := range history {
		h := &history[id]
		h.Call = calls[id]
		if h.Return != Unknown {
			h.Return = rank(h.Return)*k + k - 1
		}
	}
}

// modelRequest is the request to step for an operation: the client's,
// except for a lease grant that left the ID to the server, which steps the
// request as logged: with the ID etcd picked before proposing, or with 0
// for the store to pick at apply, as noded does.
func (run *checkRun) modelRequest(op *preparedOp) *request {
	if op.req.kind != kindLeaseGrant || op.req.leaseID != 0 || len(op.entries) == 0 {
		return op.req
	}
	if logged := run.replay.entries[op.entries[0]].req; logged.kind == kindLeaseGrant {
		return logged
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
		if placed[id] || h.Output.(*modelOutput).resp == nil && h.Output.(*modelOutput).persisted == nil {
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
	output := history[blocked].Output.(*modelOutput)
	var who string
	if input.op != nil {
		who = input.op.String()
	} else {
		who = fmt.Sprintf("the committed entry at raft index %d (no client) %s", run.replay.entries[input.entry].index, input.req)
	}
	_, exp := apply(s, input.req, &applyConfig{minLeaseTTL: run.in.MinLeaseTTLSeconds}, nil)
	return fmt.Sprintf("not linearizable: %s observed %s; after the longest linearizable prefix (%d of %d operations) the state is %s, where the model answers %s",
		who, output, len(longest), len(history), s, exp)
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

package linearizability

import "fmt"

// checkReads holds every read the client saw answered against the replayed
// log. A successful read with header revision H must equal the answer the
// model gives on the state when revision H was first reached, reads at a
// past revision answered from the state as of that revision. This is the
// only check of serializable reads (which may be stale, so porcupine leaves
// them out) and of the contents of reads at a past revision (which a
// current-state model cannot compute). Every key a read returns must also
// carry a lease that was alive when the key was written, and must not have
// outlived that lease's revoke.
func (run *checkRun) checkReads() {
	rp := run.replay
	cfg := &applyConfig{minLeaseTTL: run.in.MinLeaseTTLSeconds, past: rp}
	for _, op := range run.ops {
		if op.obs == nil || op.req.isWrite() {
			continue
		}
		if op.obs.err != errNone {
			run.checkFailedRead(op)
			continue
		}
		h := op.obs.revision
		at := rp.stateAt(h)
		if at == nil {
			run.report.add(checkerReads, "%s returned header revision %d, but the committed log only reaches revision %d",
				op, h, rp.final.revision)
			continue
		}
		run.stats.ReplayedReads++
		_, exp := apply(at, op.req, cfg, nil)
		if !matches(op.req, exp, op.obs, &run.match, true) {
			run.report.add(checkerReads, "%s returned %s, but the committed log's state at revision %d (%s) answers %s",
				op, op.obs, h, at, exp)
		}
		run.checkReadLeases(op, op.req, op.obs, h)
	}
}

// checkFailedRead: a range refused as Compacted asked for a revision the log
// compacted away by the end; porcupine checks the exact moment for
// linearizable ranges, this covers serializable ones too.
func (run *checkRun) checkFailedRead(op *preparedOp) {
	if op.req.kind != kindRange || op.obs.err != errCompacted {
		return
	}
	if rev := op.req.rng.revision; rev >= run.replay.maxCompaction {
		run.report.add(checkerReads, "%s failed Compacted, but the committed log never compacted past revision %d (highest compaction %d)",
			op, rev, run.replay.maxCompaction)
	}
}

// checkReadLeases walks the kvs of a read's ranges (nested in txns too).
func (run *checkRun) checkReadLeases(op *preparedOp, req *request, resp *response, header int64) {
	switch req.kind {
	case kindRange:
		readRev := header
		if req.rng.revision > 0 {
			readRev = req.rng.revision
		}
		if resp.rng == nil {
			return
		}
		for _, kv := range resp.rng.kvs {
			run.checkKeyLease(op, kv, readRev)
		}
	case kindTxn:
		if resp.txn == nil {
			return
		}
		branch := req.txn.success
		if !resp.txn.succeeded {
			branch = req.txn.failure
		}
		for i, sub := range branch {
			if i < len(resp.txn.responses) && resp.txn.responses[i].kind == sub.kind {
				run.checkReadLeases(op, sub, resp.txn.responses[i], header)
			}
		}
	}
}

// checkKeyLease: a key written with lease L at revision M needs L alive when
// M was written; seen at revision readRev, it needs L not revoked by then.
func (run *checkRun) checkKeyLease(who fmt.Stringer, kv keyValue, readRev int64) {
	if kv.lease == 0 {
		return
	}
	life, alive := run.replay.leaseLifeAt(kv.lease, kv.modRevision)
	if !alive {
		run.report.add(checkerLeaseRevoke, "%s: key %s carries lease %d from revision %d, but the lease was not alive when revision %d was written",
			who, quote(kv.key), kv.lease, kv.modRevision, kv.modRevision)
		return
	}
	if life.revokePos >= 0 && life.revokedRevision <= readRev {
		run.report.add(checkerLeaseRevoke, "%s: key %s attached to lease %d survived the lease's revoke at revision %d (read at revision %d)",
			who, quote(kv.key), kv.lease, life.revokedRevision, readRev)
	}
}

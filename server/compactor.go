package server

import (
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"go.uber.org/zap"

	"github.com/noded/noded/kvsm"
	"github.com/noded/noded/node"
)

// compactor is etcd's auto compaction, run by the member loop on the
// leader only (a compaction is a proposal; one member proposing is
// enough):
//
//   - periodic: keep `retention` of history. Every period = min(retention,
//     1h) it compacts to the revision the store had `retention` ago, from
//     revisions sampled every period/10.
//   - revision: every RevisionCompactionInterval (etcd: 5 minutes) it
//     compacts to the current revision minus `retention`.
type compactor struct {
	lg        *zap.Logger
	mode      string
	retention int64 // nanoseconds (periodic) or revisions (revision); 0 = off

	period         time.Duration
	sampleInterval time.Duration
	samples        []revisionSample // oldest first, at most compactorSamplesMax
	nextSample     time.Time
	nextRun        time.Time

	lastCompacted int64
	inFlight      bool
}

type revisionSample struct {
	at  time.Time
	rev int64
}

// compactorSamplesMax bounds the revision samples kept for periodic mode.
const compactorSamplesMax = 1024

func newCompactor(cfg *Config, lg *zap.Logger) *compactor {
	c := &compactor{lg: lg, mode: cfg.AutoCompactionMode}
	c.retention, _ = cfg.compactionRetention()
	if c.mode == "" {
		c.mode = CompactionModePeriodic
	}
	now := time.Now()
	switch c.mode {
	case CompactionModePeriodic:
		c.period = min(time.Duration(c.retention), time.Hour)
		c.sampleInterval = max(c.period/10, time.Millisecond)
		c.nextRun = now.Add(c.period)
	case CompactionModeRevision:
		c.period = cfg.RevisionCompactionInterval
		c.nextRun = now.Add(c.period)
	}
	if c.retention > 0 {
		lg.Info("auto compaction enabled", zap.String("mode", c.mode), zap.Int64("retention", c.retention), zap.Duration("period", c.period))
	}
	return c
}

// maybeCompact runs on every tick, on the loop.
func (c *compactor) maybeCompact(m *Member) {
	if c.retention <= 0 {
		return
	}
	// The status the loop last published: the store's revision and
	// whether this member leads.
	st := m.state.Load().status
	now := time.Now()
	if c.mode == CompactionModePeriodic && !now.Before(c.nextSample) {
		c.samples = append(c.samples, revisionSample{at: now, rev: st.Revision})
		if len(c.samples) > compactorSamplesMax {
			c.samples = c.samples[1:]
		}
		c.nextSample = now.Add(c.sampleInterval)
	}
	if now.Before(c.nextRun) || st.State != raft.StateLeader || c.inFlight {
		return
	}
	c.nextRun = now.Add(c.period)
	var target int64
	switch c.mode {
	case CompactionModePeriodic:
		cutoff := now.Add(-time.Duration(c.retention))
		for _, s := range c.samples {
			if s.at.After(cutoff) {
				break
			}
			target = s.rev
		}
	case CompactionModeRevision:
		target = st.Revision - c.retention
	}
	if target <= 0 || target <= c.lastCompacted {
		return
	}
	c.inFlight = true
	// Auto compaction is the member's own call: it runs as root.
	root := kvsm.AuthInfo{Username: kvsm.RootUser, Revision: m.node.Store().AuthRevision()}
	m.submit(&clientRequest{op: &pb.CompactionRequest{Revision: target}, ai: root, onDone: func(r node.Result) {
		c.inFlight = false
		switch {
		case r.Err == nil:
			c.lastCompacted = target
			c.lg.Info("completed auto compaction", zap.String("mode", c.mode), zap.Int64("compact-revision", target))
		case r.Err == rpctypes.ErrGRPCCompacted:
			c.lastCompacted = target // someone compacted at or past it already
		default:
			c.lg.Warn("auto compaction failed; will retry", zap.Int64("compact-revision", target), zap.Error(r.Err))
		}
	}})
}

package server

import (
	"context"
	"fmt"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"

	"github.com/noded/noded/server/corruptcheck"
)

// Corruption checks (package corruptcheck) wired to the member: hashes are
// computed on the published view (off the loop), peers are asked through
// their client URLs with Maintenance.HashKV, and a mismatch raises the
// CORRUPT alarm through raft, which every member then applies: requests
// fail with etcd's "corrupt cluster" until the alarm is disarmed.

const (
	// hashRequestTimeout bounds one peer's HashKV (etcd: its request
	// timeout).
	hashRequestTimeout = 5 * time.Second
	// initialCheckCatchUpMax bounds the wait for a restarting member to
	// apply what its own log had committed before it hashes.
	initialCheckCatchUpMax = 30 * time.Second
	// DefaultCompactHashCheckTime is etcd's --compact-hash-check-time.
	DefaultCompactHashCheckTime = time.Minute
)

// hashSource is the member as corruptcheck sees it.
type hashSource struct{ m *Member }

func (s hashSource) Local(rev int64) (corruptcheck.Hash, error) {
	st := s.m.state.Load()
	start := time.Now()
	hash, hashRev, compactRev, err := st.view.HashKV(rev)
	s.m.metrics.hashDuration.observe(time.Since(start).Seconds())
	if err != nil {
		return corruptcheck.Hash{}, err
	}
	return corruptcheck.Hash{MemberID: s.m.id, Revision: hashRev, CompactRevision: compactRev, Hash: hash}, nil
}

func (s hashSource) Peers() []uint64 {
	var ids []uint64
	for _, mem := range s.m.state.Load().status.Members {
		if mem.ID != s.m.id && !mem.IsLearner {
			ids = append(ids, mem.ID)
		}
	}
	return ids
}

func (s hashSource) Peer(ctx context.Context, id uint64, rev int64) (corruptcheck.Hash, error) {
	conn, err := s.m.forwarder.conn(id)
	if err != nil {
		return corruptcheck.Hash{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, hashRequestTimeout)
	defer cancel()
	resp, err := pb.NewMaintenanceClient(conn).HashKV(ctx, &pb.HashKVRequest{Revision: rev})
	if err != nil {
		return corruptcheck.Hash{}, err
	}
	if resp.GetHeader().GetMemberId() != id {
		return corruptcheck.Hash{}, fmt.Errorf("member %x answered for member %x", id, resp.GetHeader().GetMemberId())
	}
	return corruptcheck.Hash{MemberID: id, Revision: resp.GetHashRevision(), CompactRevision: resp.GetCompactRevision(), Hash: resp.GetHash()}, nil
}

// initialCorruptCheck runs before the member serves clients: once it has
// applied what its own log had committed, it compares its hash with its
// peers' at its revision.
func (m *Member) initialCorruptCheck(restartCommit uint64) error {
	deadline := time.Now().Add(initialCheckCatchUpMax)
	for m.state.Load().status.AppliedIndex < restartCommit {
		if time.Now().After(deadline) {
			return fmt.Errorf("initial corruption check: applied index %d did not reach the committed index %d within %v",
				m.state.Load().status.AppliedIndex, restartCommit, initialCheckCatchUpMax)
		}
		select {
		case <-m.stopped:
			return m.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return corruptcheck.Initial(context.Background(), m.lg, m.id, hashSource{m})
}

// runCorruptChecks is the leader's periodic checks: every
// CorruptCheckTime the hashes at the current revision, and every
// CompactHashCheckTime (with CompactHashCheck) the hashes at the newest
// compact revision once per compaction. It ends when the member stops.
func (m *Member) runCorruptChecks() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-m.stopLoop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var periodic, compacted <-chan time.Time
	if m.cfg.CorruptCheckTime > 0 {
		t := time.NewTicker(m.cfg.CorruptCheckTime)
		defer t.Stop()
		periodic = t.C
	}
	if m.cfg.CompactHashCheck {
		t := time.NewTicker(max(m.cfg.CompactHashCheckTime, time.Millisecond))
		defer t.Stop()
		compacted = t.C
	}
	var lastCompactChecked int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-periodic:
			if m.isLeader() {
				m.checkHashes(ctx, 0, "periodic")
			}
		case <-compacted:
			st := m.state.Load()
			if rev := st.status.CompactRevision; m.isLeader() && rev > lastCompactChecked {
				if m.checkHashes(ctx, rev, "compaction") {
					lastCompactChecked = rev
				}
			}
		}
	}
}

func (m *Member) isLeader() bool {
	st := m.state.Load()
	return st.status.Lead == m.id
}

// checkHashes compares every member's hash at rev (0: the current one)
// and raises CORRUPT for each member to blame. It reports whether the
// comparison ran.
func (m *Member) checkHashes(ctx context.Context, rev int64, kind string) bool {
	src := hashSource{m}
	hashes, err := corruptcheck.Cluster(ctx, m.lg, m.id, src, rev)
	if err != nil {
		m.lg.Warn("failed to compute local hash", zap.String("check", kind), zap.Int64("revision", rev), zap.Error(err))
		return false
	}
	bad := corruptcheck.Mismatched(hashes)
	if len(bad) == 0 {
		m.metrics.corruptChecks.Add(1)
		m.lg.Debug("finished peer corruption check", zap.String("check", kind), zap.Int("number-of-peers-checked", len(hashes)-1))
		return true
	}
	raised := m.state.Load().alarms
	for _, id := range bad {
		if slices.ContainsFunc(raised, func(a *pb.AlarmMember) bool {
			return a.GetMemberID() == id && a.GetAlarm() == pb.AlarmType_CORRUPT
		}) {
			continue // raised already; it stays until an operator disarms it
		}
		var fields []zap.Field
		for _, h := range hashes {
			fields = append(fields, zap.Stringer("member-"+fmt.Sprintf("%x", h.MemberID), h))
		}
		m.lg.Error("found hash mismatch; raising alarm CORRUPT",
			append([]zap.Field{zap.String("check", kind), zap.String("corrupt-member-id", fmt.Sprintf("%x", id))}, fields...)...)
		actx, cancel := context.WithTimeout(ctx, hashRequestTimeout)
		_, err := m.do(actx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: id, Alarm: pb.AlarmType_CORRUPT})
		cancel()
		if err != nil {
			m.lg.Warn("failed to raise alarm CORRUPT", zap.String("corrupt-member-id", fmt.Sprintf("%x", id)), zap.Error(err))
		}
	}
	return true
}

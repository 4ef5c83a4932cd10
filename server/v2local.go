package server

import (
	"context"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	v2 "github.com/noded/noded/server/v2"
)

// memberV2Stats are the member's own numbers the v2 API shows at
// /v2/stats/self and /v2/stats/leader: appends sent and received, when the
// current leader became known, and each follower's answers to appends and
// heartbeat round trips as this member saw them while it led. Its zero
// value is ready; observeIn runs on the transport's goroutines,
// observeOut and noteLeader on the loop.
type memberV2Stats struct {
	start      time.Time
	recvAppend atomic.Uint64
	sendAppend atomic.Uint64

	mu          sync.Mutex
	leader      uint64
	leaderSince time.Time
	followers   map[uint64]*followerV2Stats
}

type followerV2Stats struct {
	heartbeatSent time.Time
	rtts          uint64
	sumMs, sumSq  float64
	lastMs        float64
	minMs, maxMs  float64
	success, fail uint64
}

// followersTrackedMax bounds the followers tracked (removed members are
// not forgotten otherwise).
const followersTrackedMax = 256

func (s *memberV2Stats) follower(id uint64) *followerV2Stats {
	if s.followers == nil {
		s.followers = map[uint64]*followerV2Stats{}
	}
	f := s.followers[id]
	if f == nil {
		if len(s.followers) >= followersTrackedMax {
			clear(s.followers)
		}
		f = &followerV2Stats{minMs: math.Inf(1)}
		s.followers[id] = f
	}
	return f
}

func (s *memberV2Stats) observeIn(msg *raftpb.Message) {
	switch msg.GetType() {
	case raftpb.MessageType_MsgApp:
		s.recvAppend.Add(1)
	case raftpb.MessageType_MsgAppResp:
		s.mu.Lock()
		f := s.follower(msg.GetFrom())
		if msg.GetReject() {
			f.fail++
		} else {
			f.success++
		}
		s.mu.Unlock()
	case raftpb.MessageType_MsgHeartbeatResp:
		s.mu.Lock()
		f := s.follower(msg.GetFrom())
		if !f.heartbeatSent.IsZero() {
			ms := float64(time.Since(f.heartbeatSent).Microseconds()) / 1000
			f.heartbeatSent = time.Time{}
			f.rtts++
			f.lastMs, f.sumMs, f.sumSq = ms, f.sumMs+ms, f.sumSq+ms*ms
			f.minMs, f.maxMs = math.Min(f.minMs, ms), math.Max(f.maxMs, ms)
		}
		s.mu.Unlock()
	}
}

func (s *memberV2Stats) observeOut(msgs []*raftpb.Message) {
	var heartbeats bool
	for _, msg := range msgs {
		switch msg.GetType() {
		case raftpb.MessageType_MsgApp:
			s.sendAppend.Add(1)
		case raftpb.MessageType_MsgHeartbeat:
			heartbeats = true
		}
	}
	if !heartbeats {
		return
	}
	now := time.Now()
	s.mu.Lock()
	for _, msg := range msgs {
		if msg.GetType() == raftpb.MessageType_MsgHeartbeat {
			if f := s.follower(msg.GetTo()); f.heartbeatSent.IsZero() {
				f.heartbeatSent = now
			}
		}
	}
	s.mu.Unlock()
}

func (s *memberV2Stats) noteLeader(lead uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lead != s.leader {
		s.leader, s.leaderSince = lead, time.Now()
		clear(s.followers)
	}
}

// v2Local is the member as package v2 sees it.
type v2Local struct{ m *Member }

func (l v2Local) ClusterID() uint64 { return l.m.clusterID }

func (l v2Local) RaftIndex() uint64 { return l.m.state.Load().status.CommitIndex }

func (l v2Local) SelfStats() v2.SelfStats {
	m := l.m
	st := m.state.Load().status
	s := &m.v2stats
	s.mu.Lock()
	lead, since := s.leader, s.leaderSince
	s.mu.Unlock()
	if lead != st.Lead {
		lead, since = st.Lead, time.Now()
	}
	state := "StateFollower"
	switch st.State {
	case raft.StateLeader:
		state = "StateLeader"
	case raft.StateCandidate, raft.StatePreCandidate:
		state = "StateCandidate"
	}
	return v2.SelfStats{
		Name: m.cfg.Name, ID: strconv.FormatUint(m.id, 16), State: state, StartTime: s.start,
		LeaderInfo:           v2.NewLeaderInfo(lead, since, time.Now()),
		RecvAppendRequestCnt: s.recvAppend.Load(), SendAppendRequestCnt: s.sendAppend.Load(),
	}
}

func (l v2Local) LeaderStats() (v2.LeaderStats, bool) {
	m := l.m
	st := m.state.Load().status
	if st.State != raft.StateLeader {
		return v2.LeaderStats{}, false
	}
	out := v2.LeaderStats{Leader: strconv.FormatUint(m.id, 16), Followers: map[string]*v2.FollowerStats{}}
	s := &m.v2stats
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, mem := range st.Members {
		if mem.ID == m.id {
			continue
		}
		fs := &v2.FollowerStats{}
		if f := s.followers[mem.ID]; f != nil {
			fs.Counts = v2.CountsStats{Fail: f.fail, Success: f.success}
			if f.rtts > 0 {
				avg := f.sumMs / float64(f.rtts)
				fs.Latency = v2.LatencyStats{Current: f.lastMs, Average: avg, Minimum: f.minMs, Maximum: f.maxMs,
					StandardDeviation: math.Sqrt(math.Max(0, f.sumSq/float64(f.rtts)-avg*avg))}
			}
		}
		out.Followers[strconv.FormatUint(mem.ID, 16)] = fs
	}
	return out, true
}

func (l v2Local) Removed(ctx context.Context, id uint64) bool {
	var removed bool
	if err := l.m.call(ctx, func() { removed = slices.Contains(l.m.node.RemovedMembers(), id) }); err != nil {
		return false
	}
	return removed
}

package node

import (
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/raft/v3"
)

// Config is everything a member needs to know about itself and its limits.
// Durations are in ticks: the host ticks the node every TickMs milliseconds
// (etcd's --heartbeat-interval), and the node never reads a clock.
type Config struct {
	ID         uint64 // this member's ID
	ClusterID  uint64
	Name       string   // published to the cluster once the member runs (etcd's --name)
	ClientURLs []string // published with the name (etcd's --advertise-client-urls)

	TickMs         int64 // milliseconds of wall time one tick stands for; converts lease TTLs and timeouts
	ElectionTicks  int   // raft election timeout (etcd: --election-timeout / --heartbeat-interval)
	HeartbeatTicks int   // raft heartbeat interval

	SnapshotCount          uint64 // applied entries between two snapshots (etcd's --snapshot-count)
	SnapshotCatchUpEntries uint64 // entries kept in the log after a snapshot for slow followers

	MaxTxnOps         int   // etcd's --max-txn-ops
	MaxRequestBytes   int   // etcd's --max-request-bytes
	QuotaBackendBytes int64 // etcd's --quota-backend-bytes; past it writes fail NOSPACE

	RequestTimeoutTicks      int    // a request waiting longer fails with ErrTimeout (outcome unknown for writes)
	ReadIndexRetryTicks      int    // a ReadIndex with no answer is asked again after this long
	WatchProgressNotifyTicks int    // etcd's --watch-progress-notify-interval; 0 = off
	PendingRequestsMax       int    // bound on requests waiting for apply or a read index
	CommittedNotAppliedMax   uint64 // etcd's 5000: past it, new proposals fail TooManyRequests
	LeaseRevokesPerTickMax   int    // bound on expiry revokes the leader proposes per tick
	WatchEventsPerPollMax    int    // bound on history events a watch catch-up reads per Effects call
	MaxLearners              int    // etcd's --max-learners
	StrictReconfigCheck      bool

	MaxSizePerMsg   uint64
	MaxInflightMsgs int

	// LeaseBasedReads has the leader answer a read index from its lease
	// (raft's ReadOnlyLeaseBased; check-quorum is always on) instead of
	// confirming its leadership with a heartbeat round to a quorum. It is
	// linearizable only while no clock runs fast enough that a new leader
	// is elected before the old one's lease ends: opt-in, off by default.
	LeaseBasedReads bool

	// RequestIDBase is this incarnation's prefix for request IDs. It must
	// differ from every earlier incarnation of the member, so that an entry a
	// previous incarnation proposed is never taken for a request of this one.
	RequestIDBase uint64

	Logger raft.Logger // nil: discard raft's log

	Version           string // reported by Status (etcd's server version string)
	ReportApplied     bool   // fill Effects.Applied (the simulator records the committed history)
	ReportLeaseEvents bool   // fill Effects.LeaseEvents (the simulator's lease checker reads them)

	// Planted bugs exist so that each checker can be shown to catch the bug
	// it exists for. Production never sets them: server refuses a Config
	// that has any.
	Planted PlantedBugs
}

// PlantedBugs are deliberate faults for checker self-tests.
type PlantedBugs struct {
	LocalLinearizableReads bool // serve linearizable reads from local state, without ReadIndex
	AckBeforeSync          bool // send messages and apply before the disk write is durable
	DropWatchEvent         bool // lose one watch event now and then
	LeaseExpireEarly       bool // the leader expires leases at half their TTL
	LeaseResurrect         bool // a revoked lease comes back, so puts onto it succeed
	LeaseExpireTickEarly   bool // the leader arms a lease at now + TTL - 1 tick
	LeaseExpireUnrounded   bool // the leader arms a lease at now + TTL, counting a renewal from the tick already past
	AuthSkipTxnCompares    bool // the txn permission check at apply skips the compares
	// AckAppendBeforeSync acts on a write before it is durable when the
	// write leaves the term and vote alone: append acknowledgements in the
	// same term go out early, which no term comparison can see.
	AckAppendBeforeSync bool
	// ProgressOvertakesEvents answers a progress request while watchers of
	// the stream still catch up from history.
	ProgressOvertakesEvents bool
	// StorageCutsDamage has the member's storage cut a damaged record in
	// the newest WAL segment, and everything after it, instead of refusing
	// to open: synced entries vanish silently. The node does not read it;
	// the simulator hands it to disk.Options.PlantedCutDamage.
	StorageCutsDamage bool
}

// Any reports whether any bug is planted.
func (p PlantedBugs) Any() bool { return p != PlantedBugs{} }

// named lists each planted bug with the name it goes by in seeds' knobs
// and on nodesim's command line.
func (p *PlantedBugs) named() []struct {
	name string
	on   *bool
} {
	return []struct {
		name string
		on   *bool
	}{
		{"local-linearizable-reads", &p.LocalLinearizableReads},
		{"ack-before-sync", &p.AckBeforeSync},
		{"drop-watch-event", &p.DropWatchEvent},
		{"lease-expire-early", &p.LeaseExpireEarly},
		{"lease-resurrect", &p.LeaseResurrect},
		{"lease-expire-tick-early", &p.LeaseExpireTickEarly},
		{"lease-expire-unrounded", &p.LeaseExpireUnrounded},
		{"auth-skip-txn-compares", &p.AuthSkipTxnCompares},
		{"ack-append-before-sync", &p.AckAppendBeforeSync},
		{"progress-overtakes-events", &p.ProgressOvertakesEvents},
		{"storage-cuts-damage", &p.StorageCutsDamage},
	}
}

func (p PlantedBugs) String() string {
	var names []string
	for _, b := range p.named() {
		if *b.on {
			names = append(names, b.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// PlantedBugNames lists every planted bug's name.
func PlantedBugNames() []string {
	var p PlantedBugs
	var names []string
	for _, b := range p.named() {
		names = append(names, b.name)
	}
	return names
}

// ParsePlantedBugs reads a comma-separated list of the names String gives.
func ParsePlantedBugs(s string) (PlantedBugs, error) {
	var p PlantedBugs
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		found := false
		for _, b := range p.named() {
			if b.name == name {
				*b.on, found = true, true
			}
		}
		if !found {
			return p, fmt.Errorf("unknown planted bug %q", name)
		}
	}
	return p, nil
}

// Default limits, matching etcd where etcd has them.
const (
	DefaultSnapshotCount          = 10000
	DefaultSnapshotCatchUpEntries = 5000
	DefaultMaxTxnOps              = 128
	DefaultMaxRequestBytes        = 1536 * 1024
	DefaultQuotaBackendBytes      = 2 << 30
	DefaultCommittedNotAppliedMax = 5000
	DefaultPendingRequestsMax     = 100000
	DefaultLeaseRevokesPerTickMax = 100
	DefaultWatchEventsPerPollMax  = 10000
	DefaultMaxLearners            = 1
	DefaultMaxSizePerMsg          = 1 << 20
	DefaultMaxInflightMsgs        = 512
	MaxLeaseTTLSeconds            = 9000000000
)

// WithDefaults fills every zero limit with its default.
func (c Config) WithDefaults() Config {
	if c.TickMs == 0 {
		c.TickMs = 100
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 1
	}
	if c.SnapshotCount == 0 {
		c.SnapshotCount = DefaultSnapshotCount
	}
	if c.SnapshotCatchUpEntries == 0 {
		c.SnapshotCatchUpEntries = DefaultSnapshotCatchUpEntries
	}
	if c.MaxTxnOps == 0 {
		c.MaxTxnOps = DefaultMaxTxnOps
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.QuotaBackendBytes == 0 {
		c.QuotaBackendBytes = DefaultQuotaBackendBytes
	}
	if c.RequestTimeoutTicks == 0 {
		// etcd: 5 s plus twice the election timeout.
		c.RequestTimeoutTicks = int(5000/c.TickMs) + 2*c.ElectionTicks
	}
	if c.ReadIndexRetryTicks == 0 {
		c.ReadIndexRetryTicks = max(1, int(500/c.TickMs))
	}
	if c.PendingRequestsMax == 0 {
		c.PendingRequestsMax = DefaultPendingRequestsMax
	}
	if c.CommittedNotAppliedMax == 0 {
		c.CommittedNotAppliedMax = DefaultCommittedNotAppliedMax
	}
	if c.LeaseRevokesPerTickMax == 0 {
		c.LeaseRevokesPerTickMax = DefaultLeaseRevokesPerTickMax
	}
	if c.WatchEventsPerPollMax == 0 {
		c.WatchEventsPerPollMax = DefaultWatchEventsPerPollMax
	}
	if c.MaxLearners == 0 {
		c.MaxLearners = DefaultMaxLearners
	}
	if c.MaxSizePerMsg == 0 {
		c.MaxSizePerMsg = DefaultMaxSizePerMsg
	}
	if c.MaxInflightMsgs == 0 {
		c.MaxInflightMsgs = DefaultMaxInflightMsgs
	}
	return c
}

// Validate reports a configuration the node cannot run with.
func (c Config) Validate() error {
	switch {
	case c.ID == 0:
		return errors.New("node: member ID must not be zero")
	case c.TickMs <= 0:
		return fmt.Errorf("node: tick of %d ms: must be positive", c.TickMs)
	case c.HeartbeatTicks <= 0:
		return fmt.Errorf("node: heartbeat of %d ticks: must be positive", c.HeartbeatTicks)
	case c.ElectionTicks < 5*c.HeartbeatTicks:
		// etcd refuses an election timeout under five heartbeats.
		return fmt.Errorf("node: election timeout of %d ticks must be at least 5 heartbeats (%d ticks)",
			c.ElectionTicks, 5*c.HeartbeatTicks)
	case c.SnapshotCatchUpEntries == 0 || c.SnapshotCount == 0:
		return errors.New("node: snapshot count and catch-up entries must be positive")
	}
	return nil
}

// MinLeaseTTLSeconds is etcd's minimum lease TTL: ceil(1.5 x election timeout).
func (c Config) MinLeaseTTLSeconds() int64 {
	electionMs := int64(c.ElectionTicks) * c.TickMs
	return (3*electionMs + 1999) / 2000
}

// ticksFromSeconds converts a TTL to ticks of this member's clock.
func (c Config) ticksFromSeconds(seconds int64) int64 {
	if seconds > MaxLeaseTTLSeconds {
		seconds = MaxLeaseTTLSeconds
	}
	return (seconds*1000 + c.TickMs - 1) / c.TickMs
}

// secondsFromTicks converts remaining ticks to whole seconds, rounding
// down as etcd truncates the remaining TTL.
func (c Config) secondsFromTicks(ticks int64) int64 {
	if ticks <= 0 {
		return 0
	}
	return ticks * c.TickMs / 1000
}

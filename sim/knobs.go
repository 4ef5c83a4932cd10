package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Knobs are every choice a run makes. A seed expands into them (Draw);
// Options may pin some; String prints them all at the start of a run, so a
// failure report carries everything needed to understand the run, and the
// seed alone replays it.
type Knobs struct {
	Seed uint64

	ClusterSize    int
	TickMs         int64 // a member's heartbeat interval, and the length of its tick
	ElectionTicks  int
	SnapshotCount  uint64
	CatchUpEntries uint64

	// Network.
	DelayMinUs   int64
	DelayMeanUs  int64
	LossPermille int
	DupPermille  int

	// Disk.
	SyncLatencyMeanUs int64

	// Faults: each kind on or off for the whole run (swarm testing), and
	// how often the injector strikes.
	FaultEveryMs      int64 // mean time between two faults
	Partitions        bool
	Clogs             bool
	Crashes           bool
	TornCrashes       bool // crashes keep a torn prefix of unsynced writes
	Pauses            bool
	ClockDrift        bool
	ClockJumps        bool
	FsyncErrors       bool
	Corruption        bool // one member's synced WAL gets a bit flipped, then it restarts
	MembershipChanges bool
	ReplyLoss         bool
	SlowWatchers      bool  // some watch streams stall for seconds; the member pauses their watchers (W1)
	DriftPermille     []int // per member, when ClockDrift

	// Workload.
	Clients                                                             int
	OpsPerSecond                                                        int // across all clients
	Keys                                                                int
	ClientTimeoutMs                                                     int64
	MixPut, MixRange, MixDelete, MixTxn, MixCompact, MixLease, MixWatch int // weights
	MixLock                                                             int // weight of lock sessions (lockworkload.go)
	MixV2                                                               int // weight of v2 keys requests (v2.go)
	// UnfencedLocks plants the classic lock bug in the workload: holders
	// write the protected key without the fencing guard. Never drawn; the
	// lock checker's self-test sets it.
	UnfencedLocks bool

	// Auth runs the auth workload (auth.go): users, roles and permissions
	// changing under the faults, the KV clients as root.
	Auth bool
	// LaggingWatchers keeps some watchers far behind (watches from revision
	// 1, slow readers) and asks for progress while they catch up (W3).
	LaggingWatchers bool

	SafetyMs   int64 // virtual duration of the fault phase
	LivenessMs int64 // bound on healing: every request done and members converged
}

// Draw expands a seed into knobs. The generator is the run's knob stream:
// nothing else draws from it, so adding a knob at the end changes no
// earlier one.
func Draw(seed uint64) Knobs {
	rng := rand.New(rand.NewPCG(seed, 0x6b6e6f6273)) // "knobs"
	k := Knobs{Seed: seed}
	pick := func(weights ...int) int {
		total := 0
		for _, w := range weights {
			total += w
		}
		x := rng.IntN(total)
		for i, w := range weights {
			if x < w {
				return i
			}
			x -= w
		}
		return len(weights) - 1
	}
	between := func(lo, hi int64) int64 { return lo + rng.Int64N(hi-lo+1) }
	chance := func(percent int) bool { return rng.IntN(100) < percent }

	k.ClusterSize = []int{1, 3, 5}[pick(1, 6, 3)]
	k.TickMs = []int64{50, 100, 100, 200}[rng.IntN(4)]
	k.ElectionTicks = int(between(5, 15))
	k.SnapshotCount = uint64([]int64{50, 200, 1000, 10000}[pick(3, 3, 2, 2)])
	k.CatchUpEntries = uint64(between(5, 100))

	switch pick(5, 4, 1) {
	case 0: // a LAN
		k.DelayMinUs, k.DelayMeanUs = between(50, 500), between(100, 2000)
	case 1: // a WAN
		k.DelayMinUs, k.DelayMeanUs = between(1000, 10000), between(5000, 30000)
	default: // a hostile one: latency near the election timeout
		k.DelayMinUs, k.DelayMeanUs = between(1000, 20000), k.TickMs*1000*int64(k.ElectionTicks)/3
	}
	if chance(50) {
		k.LossPermille = int(between(1, 100))
	}
	if chance(40) {
		k.DupPermille = int(between(1, 300))
	}
	k.SyncLatencyMeanUs = []int64{100, 1000, 5000, 50000}[pick(3, 4, 2, 1)]

	k.FaultEveryMs = between(200, 3000)
	k.Partitions = chance(60)
	k.Clogs = chance(30)
	k.Crashes = chance(60)
	k.TornCrashes = k.Crashes && chance(60)
	k.Pauses = chance(30)
	k.ClockDrift = chance(40)
	k.ClockJumps = chance(20)
	k.FsyncErrors = k.Crashes && chance(20)
	k.Corruption = k.ClusterSize > 1 && chance(15)
	// A fail-stopped member (corruption) and a member being replaced are
	// each a member short; together they can cost a three-member cluster
	// its quorum for good, which no system survives. One or the other.
	k.MembershipChanges = k.ClusterSize > 1 && !k.Corruption && chance(25)
	k.ReplyLoss = chance(30)
	k.DriftPermille = make([]int, k.ClusterSize+maxJoinedMembers)
	if k.ClockDrift {
		for i := range k.DriftPermille {
			k.DriftPermille[i] = int(between(-200, 200))
		}
	}

	k.Clients = int(between(1, 16))
	k.OpsPerSecond = int(between(100, 1500))
	k.Keys = int(between(2, 30))
	k.ClientTimeoutMs = between(1000, 5000)
	// A client waits at least ten one-way delays: a linearizable read
	// through a follower takes about five (client to follower, ReadIndex to
	// the leader, its heartbeat round, back to the client). On a hostile
	// network a shorter timeout gives up on nearly every attempt and the
	// client retries for ever, which no real client is configured to do.
	k.ClientTimeoutMs = max(k.ClientTimeoutMs, 10*k.DelayMeanUs/1000)
	k.MixPut = int(between(10, 40))
	k.MixRange = int(between(10, 40))
	k.MixDelete = int(between(0, 15))
	k.MixTxn = int(between(0, 30))
	k.MixCompact = int(between(0, 3))
	k.MixLease = int(between(0, 10))
	k.MixWatch = int(between(0, 5))

	k.SafetyMs = between(10000, 30000)
	k.LivenessMs = 60000
	k.SlowWatchers = chance(30)
	k.Auth = chance(25)
	// Watchers far behind: watches from revision 1 on a long history,
	// readers that stall so that catch-up takes several batches, and
	// progress requests sent while they catch up (a progress reply must
	// never overtake an event it covers).
	k.LaggingWatchers = chance(25)
	if k.LaggingWatchers {
		k.MixWatch = max(k.MixWatch, 3)
		k.SlowWatchers = true
	}
	k.MixLock = int(between(0, 6))
	if chance(30) {
		k.MixV2 = int(between(1, 20))
	}
	return k
}

// String prints every knob, one run per line, stable across versions of
// Go and platforms.
func (k Knobs) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed=%d cluster=%d tick=%dms election=%dticks snapshot-count=%d catch-up=%d\n",
		k.Seed, k.ClusterSize, k.TickMs, k.ElectionTicks, k.SnapshotCount, k.CatchUpEntries)
	fmt.Fprintf(&b, "net delay=%dus+%dus loss=%d‰ dup=%d‰ sync=%dus\n",
		k.DelayMinUs, k.DelayMeanUs, k.LossPermille, k.DupPermille, k.SyncLatencyMeanUs)
	var faults []string
	for _, f := range []struct {
		on   bool
		name string
	}{
		{k.Partitions, "partitions"}, {k.Clogs, "clogs"}, {k.Crashes, "crashes"}, {k.TornCrashes, "torn"},
		{k.Pauses, "pauses"}, {k.ClockDrift, "drift"}, {k.ClockJumps, "clock-jumps"}, {k.FsyncErrors, "fsync-errors"},
		{k.Corruption, "corruption"}, {k.MembershipChanges, "membership"}, {k.ReplyLoss, "reply-loss"},
		{k.SlowWatchers, "slow-watchers"},
	} {
		if f.on {
			faults = append(faults, f.name)
		}
	}
	if len(faults) == 0 {
		faults = []string{"none"}
	}
	fmt.Fprintf(&b, "faults every=%dms [%s]", k.FaultEveryMs, strings.Join(faults, " "))
	if k.ClockDrift {
		fmt.Fprintf(&b, " drift‰=%v", k.DriftPermille)
	}
	b.WriteByte('\n')
	fmt.Fprintf(&b, "workload clients=%d ops/s=%d keys=%d timeout=%dms mix put:%d range:%d delete:%d txn:%d compact:%d lease:%d watch:%d lock:%d v2:%d",
		k.Clients, k.OpsPerSecond, k.Keys, k.ClientTimeoutMs, k.MixPut, k.MixRange, k.MixDelete, k.MixTxn, k.MixCompact, k.MixLease, k.MixWatch, k.MixLock, k.MixV2)
	if k.Auth {
		b.WriteString(" auth")
	}
	if k.LaggingWatchers {
		b.WriteString(" lagging-watchers")
	}
	if k.UnfencedLocks {
		b.WriteString(" (planted: unfenced lock writes)")
	}
	b.WriteByte('\n')
	fmt.Fprintf(&b, "phases safety=%dms liveness-bound=%dms", k.SafetyMs, k.LivenessMs)
	return b.String()
}

// maxJoinedMembers bounds the members a run may add beyond its initial
// cluster (membership changes replace members; IDs are never reused).
const maxJoinedMembers = 8

package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// FaultKind names one kind of fault.
type FaultKind string

// The fault kinds, as they appear in plans and in a campaign's figures.
const (
	FaultKill            FaultKind = "kill"            // kill -9 a member, restart it later
	FaultKillLeader      FaultKind = "kill-leader"     // kill -9 the leader, restart it later
	FaultPause           FaultKind = "pause"           // SIGSTOP a member (the leader half the time) past the election timeout, then SIGCONT
	FaultIsolateLeader   FaultKind = "isolate-leader"  // cut the leader off from every other member, both ways
	FaultOneWay          FaultKind = "one-way"         // drop one direction between two members (or from one member to all)
	FaultSplit           FaultKind = "split"           // a minority and a majority side
	FaultDiskFull        FaultKind = "disk-full"       // fill the tmpfs one member's data directory lives on
	FaultLostWrites      FaultKind = "lost-writes"     // kill -9 members and drop every write they never fsynced
	FaultReplace         FaultKind = "replace"         // remove a member, wipe it, add it back as a new member
	FaultTransferLeader  FaultKind = "transfer-leader" // move leadership to another member under load
	FaultClusterPowerOff FaultKind = "power-off"       // lost writes on every member at once
)

// AllFaultKinds lists every kind, in the order figures print them.
var AllFaultKinds = []FaultKind{FaultKill, FaultKillLeader, FaultPause, FaultIsolateLeader, FaultOneWay,
	FaultSplit, FaultDiskFull, FaultLostWrites, FaultClusterPowerOff, FaultReplace, FaultTransferLeader}

// needsMount says which kinds need mounts this process may not be allowed
// to make (tmpfs, FUSE).
func (k FaultKind) needsMount() bool {
	return k == FaultDiskFull || k == FaultLostWrites || k == FaultClusterPowerOff
}

// Step is one fault of a plan: what, on whom, when and for how long.
type Step struct {
	At   time.Duration // from the start of the workload
	Kind FaultKind
	// Member is the target's slot for kinds aimed at one member (kill,
	// pause of a follower, disk-full, replace, one-way's source); -1 means
	// the leader, resolved when the step runs.
	Member int
	// Peer is one-way's destination slot; -1 means every other member.
	Peer int
	// Minority is split's smaller side.
	Minority []int
	Hold     time.Duration // how long the fault lasts
}

func (s Step) String() string {
	who := fmt.Sprintf("m%d", s.Member+1)
	if s.Member < 0 {
		who = "leader"
	}
	switch s.Kind {
	case FaultOneWay:
		to := "all"
		if s.Peer >= 0 {
			to = fmt.Sprintf("m%d", s.Peer+1)
		}
		who = fmt.Sprintf("%s -> %s", who, to)
	case FaultSplit:
		var names []string
		for _, m := range s.Minority {
			names = append(names, fmt.Sprintf("m%d", m+1))
		}
		who = "minority " + strings.Join(names, ",")
	case FaultIsolateLeader, FaultTransferLeader, FaultClusterPowerOff:
		who = ""
	}
	return strings.TrimSpace(fmt.Sprintf("%7.2fs %-15s %s for %v", s.At.Seconds(), s.Kind, who, s.Hold.Round(time.Millisecond)))
}

// Plan is everything a seed decides: the cluster, the workload's shape and
// the fault schedule.
type Plan struct {
	Seed          uint64
	Members       int
	Clients       int
	Watchers      int
	Keys          int
	SnapshotCount int
	HeartbeatMs   int
	ElectionMs    int
	Duration      time.Duration // the workload under faults; healing and checking come after
	Kinds         []FaultKind   // the kinds this run uses (swarm testing: some are off)
	Steps         []Step
	// LazyFS puts every member's data on the FUSE layer that can lose
	// unsynced writes; DiskFullMember's data sits on a small tmpfs instead
	// (-1: none).
	LazyFS         bool
	DiskFullMember int
	// SlowFsync is the delay the FUSE layer adds to each fsync, widening
	// the window in which acknowledged-but-unsynced writes exist if a
	// member acknowledges before it syncs.
	SlowFsync time.Duration
}

// PlanOptions constrain NewPlan.
type PlanOptions struct {
	Duration time.Duration
	Members  int         // 0: from the seed (3 or 5)
	Kinds    []FaultKind // nil: a seeded subset of the available kinds
	// Available are the kinds this machine can inject (mount kinds need
	// root, /dev/fuse and tmpfs).
	Available []FaultKind
}

// NewPlan derives a run's plan from its seed.
func NewPlan(seed uint64, o PlanOptions) Plan {
	rng := rand.New(rand.NewPCG(seed, seed^0x5bd1e9955bd1e995))
	p := Plan{Seed: seed, Duration: o.Duration, HeartbeatMs: 100, ElectionMs: 1000, DiskFullMember: -1}
	p.Members = o.Members
	if p.Members == 0 {
		p.Members = 3
		if rng.IntN(10) < 3 {
			p.Members = 5
		}
	}
	p.Clients = 3 + rng.IntN(4)
	p.Watchers = 2 + rng.IntN(2)
	p.Keys = 4 + rng.IntN(6)
	p.SnapshotCount = []int{50, 200, 1000, 100000}[rng.IntN(4)]
	p.SlowFsync = time.Duration(rng.IntN(20)) * time.Millisecond

	available := func(k FaultKind) bool { return slices.Contains(o.Available, k) }
	if o.Kinds != nil {
		for _, k := range o.Kinds {
			if available(k) {
				p.Kinds = append(p.Kinds, k)
			}
		}
	} else {
		// Swarm: each available kind is on with probability 1/2, and at
		// least one is on.
		for _, k := range AllFaultKinds {
			if available(k) && rng.IntN(2) == 0 {
				p.Kinds = append(p.Kinds, k)
			}
		}
		if len(p.Kinds) == 0 && len(o.Available) > 0 {
			p.Kinds = append(p.Kinds, o.Available[rng.IntN(len(o.Available))])
		}
	}
	has := func(k FaultKind) bool { return slices.Contains(p.Kinds, k) }
	p.LazyFS = has(FaultLostWrites) || has(FaultClusterPowerOff)
	if has(FaultDiskFull) {
		p.DiskFullMember = rng.IntN(p.Members)
	}
	if len(p.Kinds) == 0 {
		return p
	}
	election := time.Duration(p.ElectionMs) * time.Millisecond
	at := time.Second + time.Duration(rng.Int64N(int64(time.Second)))
	for at < p.Duration {
		s := Step{At: at, Kind: p.Kinds[rng.IntN(len(p.Kinds))], Member: rng.IntN(p.Members), Peer: -1}
		// Hold a fault long enough for the cluster to notice it: past the
		// election timeout, up to a few of them.
		s.Hold = election*3/2 + time.Duration(rng.Int64N(int64(election*3)))
		switch s.Kind {
		case FaultKillLeader, FaultIsolateLeader:
			s.Member = -1
		case FaultPause:
			if rng.IntN(2) == 0 {
				s.Member = -1
			}
		case FaultOneWay:
			if rng.IntN(3) == 0 {
				s.Member = -1
			}
			if rng.IntN(2) == 0 {
				s.Peer = rng.IntN(p.Members - 1)
				if s.Member >= 0 && s.Peer >= s.Member {
					s.Peer++
				}
			}
		case FaultSplit:
			perm := rng.Perm(p.Members)
			s.Minority = perm[:(p.Members-1)/2]
			slices.Sort(s.Minority)
		case FaultDiskFull:
			s.Member = p.DiskFullMember
		case FaultLostWrites:
			if s.Member == p.DiskFullMember {
				s.Member = (s.Member + 1) % p.Members
			}
			s.Hold = time.Duration(rng.Int64N(int64(election)))
		case FaultTransferLeader:
			s.Member = -1 // the leader hands over to a random follower
			s.Hold = time.Duration(rng.Int64N(int64(election)))
		case FaultClusterPowerOff:
			s.Hold = time.Duration(rng.Int64N(int64(election)))
		case FaultKill:
			s.Hold = time.Duration(rng.Int64N(int64(3 * election)))
		}
		p.Steps = append(p.Steps, s)
		// A fault at a time, with a pause in between so the cluster can
		// recover (or not) before the next.
		at += s.Hold + time.Second/2 + time.Duration(rng.Int64N(int64(2*time.Second)))
	}
	return p
}

func (p Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %d members, %d clients, %d watchers, %d keys, snapshot-count %d, heartbeat %dms, election %dms, %v of faults\n",
		p.Seed, p.Members, p.Clients, p.Watchers, p.Keys, p.SnapshotCount, p.HeartbeatMs, p.ElectionMs, p.Duration)
	var kinds []string
	for _, k := range p.Kinds {
		kinds = append(kinds, string(k))
	}
	fmt.Fprintf(&b, "  fault kinds: %s", strings.Join(kinds, ", "))
	if p.LazyFS {
		fmt.Fprintf(&b, "; data on the lost-writes FUSE layer (fsync delayed %v)", p.SlowFsync)
	}
	if p.DiskFullMember >= 0 {
		fmt.Fprintf(&b, "; m%d on a small tmpfs", p.DiskFullMember+1)
	}
	b.WriteString("\n")
	for _, s := range p.Steps {
		fmt.Fprintf(&b, "  %s\n", s)
	}
	return b.String()
}

package sim

import (
	"strings"
	"testing"

	"github.com/noded/noded/node"
)

// Each checker must be able to fail. These tests plant a bug in the member
// code (node.PlantedBugs, a test-only option) and run seeds shaped to
// provoke it until the checker that exists for that bug reports it. A
// checker that never fires on its bug fails the test.

type plantedCase struct {
	name     string
	bug      node.PlantedBugs
	tweak    func(*Knobs)
	checkers []string // any of these reporting counts as caught
	// alsoBy are checkers that may report the bug as well; a seed that
	// only they catch does not end the search for one the checkers catch.
	alsoBy []string
}

// plantedSeedsMax bounds how many seeds a case may try before it counts
// the bug as missed.
const plantedSeedsMax = 40

func quiet(k *Knobs) {
	k.Partitions, k.Clogs, k.Crashes, k.TornCrashes, k.Pauses = false, false, false, false, false
	k.ClockDrift, k.ClockJumps, k.FsyncErrors, k.Corruption, k.MembershipChanges, k.ReplyLoss = false, false, false, false, false, false
	k.LossPermille, k.DupPermille = 0, 0
	k.MixV2 = 0
}

var plantedCases = []plantedCase{
	{
		name: "local-linearizable-reads",
		bug:  node.PlantedBugs{LocalLinearizableReads: true},
		tweak: func(k *Knobs) {
			quiet(k)
			k.ClusterSize, k.Partitions, k.FaultEveryMs = 3, true, 500
			k.DelayMinUs, k.DelayMeanUs = 2000, 20000
			k.MixPut, k.MixRange, k.MixDelete, k.MixTxn, k.MixCompact, k.MixLease, k.MixWatch = 30, 60, 0, 0, 0, 0, 0
			k.Clients, k.OpsPerSecond, k.Keys = 6, 300, 3
		},
		checkers: []string{"kv-linearizability"},
	},
	{
		name: "ack-before-sync",
		bug:  node.PlantedBugs{AckBeforeSync: true},
		tweak: func(k *Knobs) {
			quiet(k)
			// One member, slow syncs and crashes spaced so that it leads (and
			// acknowledges) between them: a crash then loses acknowledged
			// writes that never reached the disk.
			k.ClusterSize, k.Crashes, k.FaultEveryMs, k.SyncLatencyMeanUs = 1, true, 1500, 50000
			k.TickMs, k.ElectionTicks = 50, 5
			k.MixPut, k.MixRange, k.MixDelete, k.MixTxn, k.MixCompact, k.MixLease, k.MixWatch = 60, 40, 0, 0, 0, 0, 0
			k.Clients, k.OpsPerSecond = 4, 300
		},
		// The member loses acknowledged entries and applies others at their
		// indexes: the simulator's state machine safety check sees it first
		// (failures it finds read "at <time>: state-machine-safety: ..."),
		// the history checkers when the run gets that far.
		checkers: []string{"durability", "kv-linearizability", "state-machine-safety"},
	},
	{
		name: "drop-watch-event",
		bug:  node.PlantedBugs{DropWatchEvent: true},
		tweak: func(k *Knobs) {
			quiet(k)
			k.MixPut, k.MixRange, k.MixDelete, k.MixTxn, k.MixCompact, k.MixLease, k.MixWatch = 50, 10, 10, 10, 0, 0, 20
		},
		checkers: []string{"watch-reliable"},
	},
	{
		name: "lease-expire-early",
		bug:  node.PlantedBugs{LeaseExpireEarly: true},
		tweak: func(k *Knobs) {
			quiet(k)
			k.MixPut, k.MixRange, k.MixDelete, k.MixTxn, k.MixCompact, k.MixLease, k.MixWatch = 30, 20, 0, 0, 0, 30, 0
		},
		checkers: []string{"lease-expiry"},
	},
	{
		// Both arm a renewed lease less than its TTL after the renewal in
		// true time, by under a tick or by one: only the checker that judges
		// expiries against the clients' send times sees the first.
		name: "lease-expire-unrounded",
		bug:  node.PlantedBugs{LeaseExpireUnrounded: true},
		tweak: func(k *Knobs) {
			quiet(k)
			k.MixPut, k.MixRange, k.MixDelete, k.MixTxn, k.MixCompact, k.MixLease, k.MixWatch = 30, 20, 0, 0, 0, 30, 0
		},
		checkers: []string{"lease-expiry-time"},
		alsoBy:   []string{"lease-expiry"},
	},
	{
		name: "lease-expire-tick-early",
		bug:  node.PlantedBugs{LeaseExpireTickEarly: true},
		tweak: func(k *Knobs) {
			quiet(k)
			k.MixPut, k.MixRange, k.MixDelete, k.MixTxn, k.MixCompact, k.MixLease, k.MixWatch = 30, 20, 0, 0, 0, 30, 0
		},
		checkers: []string{"lease-expiry-time"},
		alsoBy:   []string{"lease-expiry"},
	},
	{
		name: "lease-resurrect",
		bug:  node.PlantedBugs{LeaseResurrect: true},
		tweak: func(k *Knobs) {
			quiet(k)
			k.MixPut, k.MixRange, k.MixDelete, k.MixTxn, k.MixCompact, k.MixLease, k.MixWatch = 40, 20, 0, 0, 0, 40, 0
		},
		checkers: []string{"kv-linearizability", "lease-revoke"},
	},
	{
		// Storage that cuts a damaged record in the newest segment (and
		// every synced record after it) instead of refusing: the member
		// restarts having silently lost what it acknowledged. Only the
		// recovered-state check, which knows what was synced, sees it.
		name: "storage-cuts-damage",
		bug:  node.PlantedBugs{StorageCutsDamage: true},
		tweak: func(k *Knobs) {
			quiet(k)
			k.ClusterSize, k.Corruption, k.FaultEveryMs = 3, true, 800
		},
		checkers: []string{"recovered-state"},
	},
	{
		// A progress reply sent while the stream's watchers still catch up
		// from history: events it covers arrive after it.
		name: "progress-overtakes-events",
		bug:  node.PlantedBugs{ProgressOvertakesEvents: true},
		tweak: func(k *Knobs) {
			quiet(k)
			k.LaggingWatchers, k.SlowWatchers = true, true
			k.MixPut, k.MixRange, k.MixDelete, k.MixTxn, k.MixCompact, k.MixLease, k.MixWatch = 50, 10, 10, 10, 0, 0, 20
		},
		checkers: []string{"watch-bookmarkable"},
		alsoBy:   []string{"watch-resumable", "watch-compaction"},
	},
	{
		// Append acknowledgements in a term already durable, sent before
		// their entries are: only the persist-before-send assertion that
		// compares the acknowledged index with the synced log sees it.
		name: "ack-append-before-sync",
		bug:  node.PlantedBugs{AckAppendBeforeSync: true},
		tweak: func(k *Knobs) {
			quiet(k)
			k.ClusterSize, k.SyncLatencyMeanUs = 3, 50000
		},
		checkers: []string{"persist-before-send"},
	},
	{
		name: "auth-skip-txn-compares",
		// Member 0 skips the permission check of txn compares: it applies a
		// txn whose compare reads a key its user may not read, which every
		// other member refuses.
		bug: node.PlantedBugs{AuthSkipTxnCompares: true},
		tweak: func(k *Knobs) {
			quiet(k)
			k.ClusterSize, k.Auth, k.Crashes, k.Partitions, k.FaultEveryMs = 3, true, true, true, 2000
		},
		checkers: []string{"auth-agreement"},
	},
}

func TestPlantedBugsAreCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("runs whole simulated clusters")
	}
	for _, c := range plantedCases {
		t.Run(c.name, func(t *testing.T) {
			for seed := uint64(1); seed <= plantedSeedsMax; seed++ {
				rep := Run(Options{Seed: seed, Planted: c.bug, Tweak: c.tweak})
				if rep.OK {
					continue
				}
				if f := failureBy(rep, c.checkers); f != "" {
					t.Logf("seed %d: caught by %s", seed, f[:min(len(f), 200)])
					return
				}
				for _, f := range rep.Failures {
					if failureBy(Report{Failures: []string{f}}, c.alsoBy) == "" {
						t.Fatalf("seed %d failed, but not by %v:\n%s", seed, c.checkers, rep)
					}
				}
			}
			t.Fatalf("%s went uncaught in %d seeds", c.name, plantedSeedsMax)
		})
	}
}

// failureBy returns the first of rep's failures that one of checkers
// reported, or "".
func failureBy(rep Report, checkers []string) string {
	for _, f := range rep.Failures {
		for _, checker := range checkers {
			if strings.HasPrefix(f, checker+":") || strings.Contains(f, ": "+checker+":") {
				return f
			}
		}
	}
	return ""
}

// The correct code under the same shaped workloads passes: the planted
// tests above fail for the bug, not for the shape.
func TestPlantedShapesPassWithoutTheBug(t *testing.T) {
	if testing.Short() {
		t.Skip("runs whole simulated clusters")
	}
	for _, c := range plantedCases {
		for seed := uint64(1); seed <= 3; seed++ {
			if rep := Run(Options{Seed: seed, Tweak: c.tweak}); !rep.OK {
				t.Errorf("%s shape, seed %d, no bug planted:\n%s", c.name, seed, rep)
			}
		}
	}
}

package sim

import (
	"strings"
	"testing"
)

// lockShape is a workload of lock sessions under crashes and partitions.
func lockShape(unfenced bool) func(*Knobs) {
	return func(k *Knobs) {
		quiet(k)
		k.ClusterSize, k.Partitions, k.Crashes, k.FaultEveryMs = 3, true, true, 1500
		k.MixPut, k.MixRange, k.MixDelete, k.MixTxn, k.MixCompact, k.MixLease, k.MixWatch, k.MixLock = 10, 10, 0, 0, 0, 0, 0, 80
		k.Clients, k.OpsPerSecond = 5, 200
		k.UnfencedLocks = unfenced
	}
}

func caughtBy(rep Report, checker string) bool {
	for _, f := range rep.Failures {
		if strings.HasPrefix(f, checker+":") || strings.Contains(f, ": "+checker+":") {
			return true
		}
	}
	return false
}

// The classic failure: a holder that pauses past its lease and then writes
// without the fencing guard writes while another client holds the lock.
// The lock-fencing checker must catch it.
func TestUnfencedLockWritesAreCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("runs whole simulated clusters")
	}
	for seed := uint64(1); seed <= plantedSeedsMax; seed++ {
		rep := Run(Options{Seed: seed, Tweak: lockShape(true)})
		if rep.OK {
			continue
		}
		if !caughtBy(rep, "lock-fencing") {
			t.Fatalf("seed %d failed, but not by lock-fencing:\n%s", seed, rep)
		}
		t.Logf("seed %d: %s", seed, rep.Failures[0][:min(len(rep.Failures[0]), 240)])
		return
	}
	t.Fatalf("unfenced lock writes went uncaught in %d seeds", plantedSeedsMax)
}

// The same sessions with the guard: no write lands outside its holder's
// ownership under crashes and partitions, and the workload did exercise the
// guard (some holders paused past their lease and had their write refused).
func TestFencedLocksHoldUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs whole simulated clusters")
	}
	var written, refused int
	for seed := uint64(1); seed <= 3; seed++ {
		rep := Run(Options{Seed: seed, Tweak: lockShape(false)})
		if !rep.OK {
			t.Fatalf("seed %d with fenced lock writes:\n%s", seed, rep)
		}
		for _, op := range rep.Input.History {
			txn, resp := op.Request.Txn, op.Response.Txn
			if txn == nil || resp == nil || len(txn.Success) != 1 || !strings.HasPrefix(string(txn.Success[0].GetRequestPut().GetKey()), "res/") {
				continue
			}
			if resp.Succeeded {
				written++
			} else {
				refused++
			}
		}
	}
	if written == 0 || refused == 0 {
		t.Fatalf("fenced writes: %d written, %d refused by the guard; the shape must exercise both", written, refused)
	}
	t.Logf("fenced writes: %d written, %d refused by the guard", written, refused)
}

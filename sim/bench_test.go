package sim

import (
	"testing"
	"time"
)

// BenchmarkSimulatedSecondsPerWallSecond runs a 3-member cluster under a
// 1,000 op/s workload with no faults and reports how many simulated
// seconds pass per wall second, and per second of the process's CPU time
// (steadier on a shared machine; the garbage collector's other threads
// count too). Checking the history is part of a run, so it is part of the
// figure. The workload is pinned (no auth, lock, v2 or lagging-watcher
// workloads, which later seeds' knobs may draw) so that figures taken
// across versions compare the same work.
func BenchmarkSimulatedSecondsPerWallSecond(b *testing.B) {
	for _, faults := range []bool{false, true} {
		name := "quiet"
		if faults {
			name = "faults"
		}
		b.Run(name, func(b *testing.B) {
			var virtualNs, ops int64
			start, startCPU := time.Now(), processCPUNs()
			for i := 0; i < b.N; i++ {
				rep := Run(Options{Seed: uint64(i + 1), Tweak: func(k *Knobs) {
					if !faults {
						quiet(k)
					}
					k.ClusterSize, k.Clients, k.OpsPerSecond = 3, 40, 1000
					k.SyncLatencyMeanUs = 1000
					// A fixed mix: mostly reads and writes, a few watches (every
					// prefix watcher receives every write, so watches multiply
					// the work), no compaction racing the checker.
					k.MixPut, k.MixRange, k.MixDelete, k.MixTxn, k.MixCompact, k.MixLease, k.MixWatch = 40, 40, 5, 10, 0, 5, 0
					k.TickMs, k.ElectionTicks = 100, 10
					k.DelayMinUs, k.DelayMeanUs = 200, 500
					k.SafetyMs = 20000
					k.Auth, k.LaggingWatchers, k.MixLock, k.MixV2 = false, false, 0, 0
				}})
				if !rep.OK {
					b.Fatalf("%s", rep)
				}
				virtualNs += rep.Stats.VirtualNs
				ops += rep.Stats.Ops
			}
			wall, cpu := time.Since(start), processCPUNs()-startCPU
			b.ReportMetric(float64(virtualNs)/float64(wall.Nanoseconds()), "sim-s/wall-s")
			if cpu > 0 {
				b.ReportMetric(float64(virtualNs)/float64(cpu), "sim-s/cpu-s")
			}
			b.ReportMetric(float64(ops)/float64(virtualNs)*1e9, "ops/sim-s")
		})
	}
}

package sim

import (
	"os"
	"strconv"
	"testing"
)

// TestPlantedShapesCampaign runs the planted-bug workloads without their
// bugs over many seeds: targeted workloads (a one-member cluster with slow
// syncs and crashes, watch-heavy, lease-heavy) find what the swarm of
// random knobs reaches rarely. Off by default; NODED_SHAPE_SEEDS=N turns it
// on for seeds 1..N.
func TestPlantedShapesCampaign(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("NODED_SHAPE_SEEDS"))
	if n == 0 {
		t.Skip("set NODED_SHAPE_SEEDS=N to run")
	}
	for _, c := range plantedCases {
		for seed := uint64(1); seed <= uint64(n); seed++ {
			if rep := Run(Options{Seed: seed, Tweak: c.tweak}); !rep.OK {
				t.Errorf("%s shape, seed %d:\n%s", c.name, seed, rep)
			}
		}
	}
}

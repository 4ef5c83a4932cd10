package sim

import (
	"regexp"
	"strings"
	"testing"
)

// The v2 workload runs under the seed's faults with its histories
// checked, and does what it is there for: every kind of v2 write
// succeeds somewhere, compare-and-swaps fail when another client got
// there first, and TTL keys go.
func TestV2Workload(t *testing.T) {
	outcomes := map[string]int{}
	line := regexp.MustCompile(`v2 (GET|PUT|POST|DELETE) \S+: (\S+)`)
	for _, seed := range []uint64{1, 2, 3, 4} {
		var trace strings.Builder
		rep := Run(Options{Seed: seed, Trace: &trace, Tweak: func(k *Knobs) {
			k.MixV2, k.ClusterSize = 60, 3
			k.Clients, k.OpsPerSecond = 4, 400
		}})
		if !rep.OK {
			t.Fatalf("seed %d: %s", seed, rep)
		}
		for _, m := range line.FindAllStringSubmatch(trace.String(), -1) {
			outcomes[m[2]]++
		}
	}
	t.Logf("v2 outcomes: %v", outcomes)
	for _, want := range []string{"set", "create", "update", "compareAndSwap", "compareAndDelete", "delete", "get", "error"} {
		if outcomes[want] == 0 {
			t.Errorf("no v2 request ended in %q: %v", want, outcomes)
		}
	}
}

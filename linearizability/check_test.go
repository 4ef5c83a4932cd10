package linearizability

import (
	"testing"
)

func TestGeneratedRunPasses(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		g := generate(genConfig{seed: seed, clients: 4, ops: 300, keys: 6, unknownPerMille: 50, watches: 4, leases: true, compactions: true})
		res := Check(g.in, Options{})
		if !res.OK {
			t.Fatalf("seed %d: correct run fails:\n%s", seed, res)
		}
		if seed == 1 {
			t.Log(res.String())
		}
	}
}

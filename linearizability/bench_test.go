package linearizability

import (
	"strings"
	"testing"
	"time"
)

// bench10k is the size the simulator's longest runs reach: 10,000
// operations from 8 concurrent clients over a few dozen keys, 5% of them
// with outcomes the client never learned, with leases, compactions and
// watchers.
func bench10k(seed uint64) *generated {
	return generate(genConfig{seed: seed, clients: 8, ops: 10000, keys: 32, unknownPerMille: 50,
		watches: 8, leases: true, compactions: true})
}

// BenchmarkCheck10k measures Check on a correct 10,000-operation run. The
// budget is 5 s per check on one core.
func BenchmarkCheck10k(b *testing.B) {
	g := bench10k(1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if res := Check(g.in, Options{}); !res.OK {
			b.Fatalf("correct run fails:\n%s", res)
		}
	}
}

// TestCheck10k runs the benchmark's history once, so a model change that
// makes it fail (or crawl) is seen by go test, not only by -bench.
func TestCheck10k(t *testing.T) {
	if testing.Short() {
		t.Skip("checks a 10,000-operation history")
	}
	g := bench10k(2)
	res := Check(g.in, Options{})
	if !res.OK {
		t.Fatalf("correct run fails:\n%s", res)
	}
	t.Log(res.String())
}

// BenchmarkCheck10kContended is the hard case for porcupine: 32 clients on 4
// keys, so every operation overlaps dozens of others on the same keys.
func BenchmarkCheck10kContended(b *testing.B) {
	g := generate(genConfig{seed: 7, clients: 32, ops: 10000, keys: 4, unknownPerMille: 50,
		watches: 2, leases: true, compactions: true})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if res := Check(g.in, Options{}); !res.OK {
			b.Fatalf("correct run fails:\n%s", res)
		}
	}
}

// A search that runs out of time is a failure that says so, never a pass.
func TestPorcupineTimeoutIsReported(t *testing.T) {
	if testing.Short() {
		t.Skip("checks a 10,000-operation history")
	}
	g := bench10k(4)
	res := Check(g.in, Options{Timeout: time.Nanosecond})
	if res.OK || !res.Stats.PorcupineTimeout {
		t.Fatalf("timed-out search passes:\n%s", res)
	}
	want := "kv-linearizability: undecided: porcupine's search ran out of its 1ns timeout"
	if !strings.Contains(res.String(), want) {
		t.Fatalf("report lacks %q:\n%s", want, res)
	}
}

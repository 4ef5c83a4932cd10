package disk

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
)

// simTraceHashGolden is the hash of simTrace on this commit's format. It is
// the same natively and under GOOS=js GOARCH=wasm; it changes only when the
// WAL format, SimFS's crash model or the sweep workload changes (then update
// it, after checking both platforms agree).
const simTraceHashGolden = "a9eccf84f3ca0864c2f0df3d7a1a835638608ba0e54d651fdd4b202c0407b779"

// simTrace runs the sweep workload under several seeded crashes and bit
// flips and renders every SimFS state and every Open result (with the
// recovery notes): the twin's whole observable behaviour for those seeds.
func simTrace(t *testing.T) string {
	var trace string
	for seed := uint64(0); seed < 12; seed++ {
		rng := newRand(seed)
		fsys := NewSimFS()
		fsys.HaltAfterOps(int64(20 + rng.IntN(140)))
		_ = sweepWorkload(fsys, newLogModel(), sweepOptions)
		fsys.Crash(rng, CrashModes[seed%3])
		trace += fsys.String() + "\n"
		if !Exists(fsys, "wal") {
			continue
		}
		_, rec, err := Open(fsys, "wal", "snap", sweepOptions)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		trace += describeRecovered(rec) + "\n"
		for _, n := range rec.Notes {
			trace += "note " + n.String() + "\n"
		}
		if name, bit, ok := fsys.FlipRandomBit(rng, nil); ok {
			_, _, err := Open(fsys, "wal", "snap", sweepOptions)
			trace += fmt.Sprintf("flip %s bit %d: %v\n", name, bit, err)
		}
	}
	return trace
}

// TestSimFSDeterministic: the same seeds give the same trace, run after
// run and platform after platform (the pinned hash).
func TestSimFSDeterministic(t *testing.T) {
	first, second := simTrace(t), simTrace(t)
	if first != second {
		t.Fatal("two runs of the same seeds differ")
	}
	for _, want := range []string{"generation=1", "log=", "flip wal/", "disk: corrupt record in wal/"} {
		if !strings.Contains(first, want) {
			t.Fatalf("the trace never shows %q:\n%s", want, first)
		}
	}
	hash := fmt.Sprintf("%x", sha256.Sum256([]byte(first)))
	if hash != simTraceHashGolden {
		t.Fatalf("trace hash %s, pinned %s", hash, simTraceHashGolden)
	}
}

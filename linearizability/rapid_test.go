package linearizability

import (
	"testing"

	"github.com/anishathalye/porcupine"
	"pgregory.net/rapid"
)

// Property tests over random runs. A run is a random sequential execution
// through the reference model, delayed into a concurrent history (see
// generate); it must always pass. The same run with one response mutated
// must fail, for every mutation below: each is chosen to be detectable
// whatever the run, and the comment on each says why.
//
// Mutations that are NOT always detectable, and so are not asserted:
//   - a read's header revision moved to another revision at which its range
//     held the same keys, still inside what its interval admits: the read
//     is then a correct read at that revision;
//   - the events of a watcher's last delivered revision dropped, when no
//     progress notification follows: the watcher then simply ended earlier;
//   - ties under a non-key sort order reordered, or cut differently by the
//     limit: etcd's sort is unstable, so any order of ties is right;
//   - anything about an operation whose outcome is unknown: it is checked
//     only through the committed log;
//   - a serializable read moved to an older revision: it is allowed to be
//     stale.

func drawRun(t *rapid.T) *generated {
	return generate(genConfig{
		seed:            rapid.Uint64().Draw(t, "seed"),
		clients:         rapid.IntRange(1, 6).Draw(t, "clients"),
		ops:             rapid.IntRange(1, 80).Draw(t, "ops"),
		keys:            rapid.IntRange(1, 6).Draw(t, "keys"),
		unknownPerMille: rapid.IntRange(0, 200).Draw(t, "unknownPerMille"),
		watches:         rapid.IntRange(0, 3).Draw(t, "watches"),
		leases:          rapid.Bool().Draw(t, "leases"),
		compactions:     rapid.Bool().Draw(t, "compactions"),
	})
}

func TestRandomCorrectRunsPass(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := drawRun(t)
		if res := Check(g.in, Options{}); !res.OK {
			t.Fatalf("correct run fails:\n%s", res)
		}
	})
}

// mutation plants one bug in a correct run; it reports false when the run
// has nothing it applies to.
type mutation struct {
	name  string
	apply func(t *rapid.T, g *generated) bool
}

// pick draws one of the indexes for which ok holds.
func pick(t *rapid.T, n int, ok func(i int) bool, label string) (int, bool) {
	var candidates []int
	for i := 0; i < n; i++ {
		if ok(i) {
			candidates = append(candidates, i)
		}
	}
	if len(candidates) == 0 {
		return 0, false
	}
	return rapid.SampledFrom(candidates).Draw(t, label), true
}

// acknowledged reports whether history op i is a write the client saw
// succeed; such a write is in the log and its response is compared with
// the replay's.
func acknowledged(g *generated, i int) bool {
	op := g.in.History[i]
	if op.Return == Unknown || op.Response.Err != nil || g.entryOf[i] < 0 {
		return false
	}
	req, err := convertRequest(op.Request)
	return err == nil && req.isWrite()
}

var mutations = []mutation{
	{
		// The replay applies the write at one revision; durability compares.
		name: "write header revision",
		apply: func(t *rapid.T, g *generated) bool {
			i, ok := pick(t, len(g.in.History), func(i int) bool { return acknowledged(g, i) }, "op")
			if !ok {
				return false
			}
			r := g.in.History[i].Response
			delta := rapid.Int64Range(1, 3).Draw(t, "delta")
			switch {
			case r.Put != nil:
				r.Put.Header.Revision += delta
			case r.DeleteRange != nil:
				r.DeleteRange.Header.Revision += delta
			case r.Txn != nil:
				r.Txn.Header.Revision += delta
			case r.Compact != nil:
				r.Compact.Header.Revision += delta
			case r.LeaseGrant != nil:
				r.LeaseGrant.Header.Revision += delta
			case r.LeaseRevoke != nil:
				r.LeaseRevoke.Header.Revision += delta
			}
			return true
		},
	},
	{
		// A value never written cannot be in the state at any revision; the
		// header pins the revision the replay reads at.
		name: "read value",
		apply: func(t *rapid.T, g *generated) bool {
			i, ok := pick(t, len(g.in.History), func(i int) bool {
				op := g.in.History[i]
				return op.Return != Unknown && op.Response.Range != nil && len(op.Response.Range.Kvs) > 0
			}, "op")
			if !ok {
				return false
			}
			kvs := g.in.History[i].Response.Range.Kvs
			kvs[rapid.IntRange(0, len(kvs)-1).Draw(t, "kv")].Value = []byte("never-written")
			return true
		},
	},
	{
		// count is a function of the state at the header revision.
		name: "read count",
		apply: func(t *rapid.T, g *generated) bool {
			i, ok := pick(t, len(g.in.History), func(i int) bool {
				op := g.in.History[i]
				return op.Return != Unknown && op.Response.Range != nil
			}, "op")
			if !ok {
				return false
			}
			g.in.History[i].Response.Range.Count++
			return true
		},
	},
	{
		// Committed write txns are replayed; the branch taken is a function
		// of the state before them.
		name: "txn branch",
		apply: func(t *rapid.T, g *generated) bool {
			i, ok := pick(t, len(g.in.History), func(i int) bool {
				return acknowledged(g, i) && g.in.History[i].Response.Txn != nil
			}, "op")
			if !ok {
				return false
			}
			g.in.History[i].Response.Txn.Succeeded = !g.in.History[i].Response.Txn.Succeeded
			return true
		},
	},
	{
		// An acknowledged write must be in the log.
		name: "lost write",
		apply: func(t *rapid.T, g *generated) bool {
			i, ok := pick(t, len(g.in.History), func(i int) bool {
				return acknowledged(g, i) && g.in.History[i].Response.Err == nil
			}, "op")
			if !ok {
				return false
			}
			pos := g.entryOf[i]
			g.in.Committed = append(g.in.Committed[:pos:pos], g.in.Committed[pos+1:]...)
			return true
		},
	},
	{
		// A request ID may be logged once.
		name: "write applied twice",
		apply: func(t *rapid.T, g *generated) bool {
			pos, ok := pick(t, len(g.in.Committed), func(int) bool { return true }, "entry")
			if !ok {
				return false
			}
			dup := g.in.Committed[pos]
			dup.Index = 1 << 40
			g.in.Committed = append(g.in.Committed, dup)
			return true
		},
	},
	{
		// Between two revisions it delivered, a watcher must have every
		// matching event of the log: drop one below its last revision.
		name: "dropped watch event",
		apply: func(t *rapid.T, g *generated) bool {
			type at struct{ w, r, e int }
			var candidates []at
			for w, h := range g.in.Watches {
				var last int64
				for _, r := range h.Responses {
					for _, e := range r.Resp.Events {
						last = max(last, e.Kv.ModRevision)
					}
				}
				for r, rcv := range h.Responses {
					for e, ev := range rcv.Resp.Events {
						if ev.Kv.ModRevision < last {
							candidates = append(candidates, at{w, r, e})
						}
					}
				}
			}
			if len(candidates) == 0 {
				return false
			}
			c := candidates[rapid.IntRange(0, len(candidates)-1).Draw(t, "event")]
			resp := g.in.Watches[c.w].Responses[c.r].Resp
			resp.Events = append(resp.Events[:c.e:c.e], resp.Events[c.e+1:]...)
			return true
		},
	},
	{
		// No (revision, key) twice on one watcher.
		name: "duplicated watch event",
		apply: func(t *rapid.T, g *generated) bool {
			type at struct{ w, r int }
			var candidates []at
			for w, h := range g.in.Watches {
				for r, rcv := range h.Responses {
					if len(rcv.Resp.Events) > 0 {
						candidates = append(candidates, at{w, r})
					}
				}
			}
			if len(candidates) == 0 {
				return false
			}
			c := candidates[rapid.IntRange(0, len(candidates)-1).Draw(t, "response")]
			resp := g.in.Watches[c.w].Responses[c.r].Resp
			resp.Events = append(resp.Events, resp.Events[len(resp.Events)-1])
			return true
		},
	},
	{
		// The leader's clock: an expiry at the tick of the grant is early
		// for any positive TTL.
		name: "early lease expiry",
		apply: func(t *rapid.T, g *generated) bool {
			granted := map[int64]int64{}
			var candidates []int
			for i, e := range g.in.Leases {
				switch e.Kind {
				case LeaseGranted:
					granted[e.Lease] = e.LocalTick
				case LeaseExpiryProposed:
					if _, ok := granted[e.Lease]; ok {
						candidates = append(candidates, i)
					}
				}
			}
			if len(candidates) == 0 {
				return false
			}
			i := rapid.SampledFrom(candidates).Draw(t, "expiry")
			g.in.Leases[i].LocalTick = granted[g.in.Leases[i].Lease]
			return true
		},
	},
}

func TestRandomMutatedRunsFail(t *testing.T) {
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			planted := 0
			rapid.Check(t, func(t *rapid.T) {
				g := drawRun(t)
				if !m.apply(t, g) {
					return
				}
				planted++
				if res := Check(g.in, Options{}); res.OK {
					t.Fatalf("mutation %q not detected:\n%s", m.name, res)
				}
			})
			if planted > 0 {
				return
			}
			// Few draws (go test -short) may all lack a target: plant the
			// mutation in a run big enough to have one.
			rapid.Check(t, func(t *rapid.T) {
				g := generate(genConfig{seed: rapid.Uint64().Draw(t, "seed"), clients: 4, ops: 200, keys: 4,
					unknownPerMille: 50, watches: 3, leases: true, compactions: true})
				if !m.apply(t, g) {
					t.Fatalf("a 200-operation run has nothing for mutation %q to change", m.name)
				}
				if res := Check(g.in, Options{}); res.OK {
					t.Fatalf("mutation %q not detected:\n%s", m.name, res)
				}
			})
		})
	}
}

// kvVerdict runs porcupine alone over the run's KV history.
func kvVerdict(in Input, raw bool) bool {
	run := newCheckRun(in, Options{})
	run.rawIntervals = raw
	history := run.kvHistory()
	return porcupine.CheckOperations(kvModel(&run.match, in.MinLeaseTTLSeconds), history)
}

// Tightening intervals by revision (and ordering ties by it) must never
// change porcupine's answer: checked on random runs whose reads were shifted
// or swapped, which makes about half of them not linearizable.
func TestTighteningIsExact(t *testing.T) {
	linearizable, not := 0, 0
	rapid.Check(t, func(t *rapid.T) {
		g := generate(genConfig{
			seed:            rapid.Uint64().Draw(t, "seed"),
			clients:         rapid.IntRange(2, 6).Draw(t, "clients"),
			ops:             rapid.IntRange(2, 40).Draw(t, "ops"),
			keys:            rapid.IntRange(1, 3).Draw(t, "keys"),
			unknownPerMille: rapid.IntRange(0, 300).Draw(t, "unknownPerMille"),
			leases:          rapid.Bool().Draw(t, "leases"),
			compactions:     rapid.Bool().Draw(t, "compactions"),
		})
		var reads []int
		for i, op := range g.in.History {
			if op.Return != Unknown && op.Response.Range != nil && !op.Request.Range.Serializable {
				reads = append(reads, i)
			}
		}
		for n := rapid.IntRange(0, 3).Draw(t, "mutations"); n > 0 && len(reads) > 0; n-- {
			a := rapid.SampledFrom(reads).Draw(t, "read")
			b := rapid.SampledFrom(reads).Draw(t, "other")
			if rapid.Bool().Draw(t, "swap") {
				g.in.History[a].Response, g.in.History[b].Response = g.in.History[b].Response, g.in.History[a].Response
			} else {
				g.in.History[a].Response.Range.Header.Revision += rapid.Int64Range(-2, 2).Draw(t, "shift")
			}
		}
		raw, tight := kvVerdict(g.in, true), kvVerdict(g.in, false)
		if raw != tight {
			t.Fatalf("porcupine says %v on the recorded intervals but %v on the tightened ones", raw, tight)
		}
		if raw {
			linearizable++
		} else {
			not++
		}
	})
	if linearizable == 0 || not == 0 {
		t.Fatalf("the runs were not mixed: %d linearizable, %d not", linearizable, not)
	}
	t.Logf("%d linearizable, %d not", linearizable, not)
}

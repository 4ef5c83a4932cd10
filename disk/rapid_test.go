package disk

import (
	"fmt"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"pgregory.net/rapid"
)

// TestStorageAgainstModel is a rapid state-machine test: random appends
// (raft-style overwrites above the commit index included), hard states,
// syncs, local and leader snapshots, crashes in every mode and clean
// reopens, checked against logModel. After every crash, Open must return
// one of the model's states between the last acknowledged one and the last
// issued one; after a clean reopen, exactly the last one.
func TestStorageAgainstModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		opts := Options{
			SegmentSizeBytes: int64(rapid.IntRange(150, 3000).Draw(rt, "segmentSizeBytes")),
			SnapshotsKept:    rapid.IntRange(1, 3).Draw(rt, "snapshotsKept"),
		}
		fsys := NewSimFS()
		s, err := Create(fsys, "wal", "snap", []byte("m"), opts)
		if err != nil {
			rt.Fatalf("Create: %v", err)
		}
		m := newLogModel()
		var (
			term, commit, snapIndex uint64 = 1, 0, 0
			crashSeed               uint64
		)
		termAt := func(i uint64) uint64 {
			t, ok := m.termAt(i)
			if !ok {
				rt.Fatalf("model has no entry %d", i)
			}
			return t
		}
		reopened := func(rec Recovered) {
			r := m.match(rec)
			if r < 0 {
				rt.Fatalf("recovered state is none of the acceptable ones\n got %s\nacked %s\nlast  %s",
					describeRecovered(rec), m.states[m.acked], m.states[len(m.states)-1])
			}
			m.settle(r, rec)
			commit, snapIndex = 0, 0
			if rec.HardState != nil {
				commit = rec.HardState.GetCommit()
				term = max(term, rec.HardState.GetTerm())
			}
			if rec.Snapshot != nil {
				snapIndex = rec.Snapshot.GetMetadata().GetIndex()
				commit = max(commit, snapIndex)
			}
			if n := len(rec.Entries); n > 0 {
				term = max(term, rec.Entries[n-1].GetTerm())
			}
		}
		rt.Repeat(map[string]func(*rapid.T){
			"append": func(rt *rapid.T) {
				last := m.last()
				low := max(commit, snapIndex) + 1
				if low > last+1 {
					low = last + 1
				}
				first := rapid.Uint64Range(low, last+1).Draw(rt, "first")
				n := rapid.Uint64Range(1, 8).Draw(rt, "count")
				if first <= last {
					term++ // a new leader overwrites the uncommitted suffix
				}
				es := make([]*raftpb.Entry, 0, n)
				for i := first; i < first+n; i++ {
					es = append(es, ent(i, term, fmt.Sprintf("%d.%d", i, term)))
					m.entry(es[len(es)-1])
				}
				var hs *raftpb.HardState
				if rapid.Bool().Draw(rt, "withHardState") {
					commit = rapid.Uint64Range(commit, first+n-1).Draw(rt, "commit")
					hs = hardState(term, 1, commit)
					m.hardState(hs)
				}
				if err := s.Append(hs, es); err != nil {
					rt.Fatalf("Append: %v", err)
				}
			},
			"sync": func(rt *rapid.T) {
				if err := s.Sync(); err != nil {
					rt.Fatalf("Sync: %v", err)
				}
				m.ack()
			},
			"localSnapshot": func(rt *rapid.T) {
				if commit <= snapIndex || commit > m.last() {
					rt.Skip("nothing committed past the snapshot")
				}
				index := rapid.Uint64Range(snapIndex+1, commit).Draw(rt, "index")
				m.snapshot(index, termAt(index))
				if err := s.SaveSnapshot(snapshot(index, termAt(index), "local")); err != nil {
					rt.Fatalf("SaveSnapshot: %v", err)
				}
				m.ack()
				snapIndex = index
			},
			"leaderSnapshot": func(rt *rapid.T) {
				index := m.last() + rapid.Uint64Range(1, 5).Draw(rt, "ahead")
				term++
				m.snapshot(index, term)
				if err := s.SaveSnapshot(snapshot(index, term, "leader")); err != nil {
					rt.Fatalf("SaveSnapshot: %v", err)
				}
				m.ack()
				snapIndex, commit = index, index
			},
			"crash": func(rt *rapid.T) {
				mode := rapid.SampledFrom(CrashModes).Draw(rt, "mode")
				crashSeed++
				fsys.Crash(newRand(crashSeed), mode)
				var rec Recovered
				var err error
				s, rec, err = Open(fsys, "wal", "snap", opts)
				if err != nil {
					rt.Fatalf("Open after a %s crash: %v\n%s", mode, err, fsys)
				}
				reopened(rec)
			},
			"reopen": func(rt *rapid.T) {
				if err := s.Close(); err != nil {
					rt.Fatalf("Close: %v", err)
				}
				// No crash: everything written is still there (synced or not,
				// and it stays as durable as it was).
				var rec Recovered
				var err error
				s, rec, err = Open(fsys, "wal", "snap", opts)
				if err != nil {
					rt.Fatalf("Open: %v", err)
				}
				if got, want := describeRecovered(rec), m.states[len(m.states)-1]; got != want {
					rt.Fatalf("clean reopen:\n got %s\nwant %s", got, want)
				}
			},
		})
	})
}

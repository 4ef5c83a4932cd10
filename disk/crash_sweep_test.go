package disk

import (
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

// sweepOptions make the workload roll segments over every few records and
// keep two snapshots, so releases happen too.
var sweepOptions = Options{SegmentSizeBytes: 256, SnapshotsKept: 2}

// sweepWorkload drives a Storage through every kind of write: appends with
// and without hard states, batches left unsynced and then synced together,
// raft overwrites of unsynced and synced entries, segment rollovers, local
// snapshots that release segments and old snapshot files, and a snapshot
// from the leader past the end of the log that restarts it. It stops at the
// first error and reports it; m tracks what was issued and acknowledged.
func sweepWorkload(fsys *SimFS, m *logModel) error {
	s, err := Create(fsys, "wal", "snap", []byte("member-1"), sweepOptions)
	if err != nil {
		return err
	}
	m.ack() // Create returned: the empty WAL is durable
	appendAll := func(hs *raftpb.HardState, es []*raftpb.Entry) error {
		for _, e := range es {
			m.entry(e)
		}
		if hs != nil {
			m.hardState(hs)
		}
		return s.Append(hs, es)
	}
	sync := func() error {
		if err := s.Sync(); err != nil {
			return err
		}
		m.ack()
		return nil
	}
	save := func(index, term uint64) error {
		m.snapshot(index, term)
		if err := s.SaveSnapshot(snapshot(index, term, fmt.Sprintf("state@%d", index))); err != nil {
			return err
		}
		m.ack()
		return nil
	}
	steps := []func() error{
		func() error { return appendAll(hardState(1, 1, 0), ents(1, 5, 1)) },
		sync,
		func() error { return appendAll(nil, ents(6, 8, 1)) },
		func() error { return appendAll(hardState(1, 1, 5), ents(9, 10, 1)) },
		sync,
		func() error { return appendAll(hardState(2, 2, 8), ents(9, 12, 2)) }, // overwrites synced 9..10
		sync,
		func() error { return save(5, 1) },
		func() error { return appendAll(hardState(2, 2, 15), ents(13, 20, 2)) },
		sync,
		func() error { return save(12, 2) },
		func() error { return appendAll(hardState(3, 3, 20), ents(21, 25, 3)) },
		sync,
		func() error { return save(20, 2) }, // releases up to 12; drops snapshot file 5
		func() error { return appendAll(nil, ents(26, 27, 3)) },
		func() error { return appendAll(hardState(4, 4, 25), ents(26, 28, 4)) }, // overwrites unsynced 26..27
		sync,
		func() error { return save(40, 5) }, // from the leader, past the end: the log restarts at 41
		func() error { return appendAll(hardState(5, 0, 41), ents(41, 43, 5)) },
		sync,
		func() error { return save(42, 5) }, // releases up to 40
		func() error { return appendAll(nil, ents(44, 44, 5)) }, // never synced
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	m.finished = true
	return s.Close()
}

// TestCrashPointSweep crashes the workload after every single FS operation
// in turn, in every crash mode (the torn modes under several seeds), and
// then checks:
//   - if Create had not finished, Exists is false, or Open works: a half
//     created WAL is never mistaken for one, and Create works again;
//   - otherwise Open succeeds (a crash alone never makes it refuse) and
//     returns exactly the state after some prefix of the records written,
//     no shorter than what was acknowledged (synced) before the crash:
//     every synced record is there and nothing after a gap is accepted;
//   - a second crash during that Open's repair, then Open again, returns
//     the same state (sim-faults D11);
//   - the reopened Storage appends, syncs and reopens cleanly.
func TestCrashPointSweep(t *testing.T) {
	clean := NewSimFS()
	if err := sweepWorkload(clean, newLogModel()); err != nil {
		t.Fatalf("workload without faults: %v", err)
	}
	totalOps := clean.OpsCount()
	seedsPerMode := map[CrashMode]uint64{CrashLoseUnsynced: 1, CrashTorn: 3, CrashZeroTail: 3}
	var crashPoints, notCreated, beyondAcked, repairCrashes int
	for k := int64(0); k <= totalOps; k++ {
		for _, mode := range CrashModes {
			for seed := uint64(0); seed < seedsPerMode[mode]; seed++ {
				crashPoints++
				name := fmt.Sprintf("op %d of %d, %s, seed %d", k, totalOps, mode, seed)
				rng := newRand(uint64(k)*1000 + uint64(mode)*100 + seed)
				fsys := NewSimFS()
				fsys.HaltAfterOps(k)
				m := newLogModel()
				err := sweepWorkload(fsys, m)
				if k < totalOps && !errors.Is(err, ErrHalted) {
					t.Fatalf("%s: workload ended with %v, want ErrHalted", name, err)
				}
				fsys.Crash(rng, mode)

				if !Exists(fsys, "wal") {
					if m.acked > 0 || len(m.states) > 1 {
						t.Fatalf("%s: Create had returned, but after the crash there is no WAL\n%s", name, fsys)
					}
					notCreated++
					s, err := Create(fsys, "wal", "snap", []byte("member-1"), sweepOptions)
					if err != nil {
						t.Fatalf("%s: Create after a crash during Create: %v\n%s", name, err, fsys)
					}
					must(t, s.Close())
					continue
				}
				s, rec, err := Open(fsys, "wal", "snap", sweepOptions)
				if err != nil {
					t.Fatalf("%s: Open refused after a plain crash: %v\n%s", name, err, fsys)
				}
				r := m.match(rec)
				if r < 0 {
					t.Fatalf("%s: recovered a state that is not a prefix of the writes at or after the acknowledged one\n got %s\nacked %s\n%s",
						name, describeRecovered(rec), m.states[m.acked], fsys)
				}
				if r > m.acked {
					beyondAcked++
				}
				if string(rec.Metadata) != "member-1" {
					t.Fatalf("%s: metadata %q", name, rec.Metadata)
				}
				must(t, s.Close())

				// Crash again during a second Open's repairs, then open again.
				fsys2 := fsys
				fsys2.HaltAfterOps(int64(rng.IntN(4)))
				if _, _, err := Open(fsys2, "wal", "snap", sweepOptions); err != nil {
					repairCrashes++
				}
				fsys2.Crash(rng, mode)
				s, rec2, err := Open(fsys2, "wal", "snap", sweepOptions)
				if err != nil {
					t.Fatalf("%s: Open after a crash during recovery: %v\n%s", name, err, fsys2)
				}
				if describeRecovered(rec2) != describeRecovered(rec) {
					t.Fatalf("%s: a crash during recovery changed the state\nbefore %s\nafter  %s", name, describeRecovered(rec), describeRecovered(rec2))
				}
				// The repaired WAL takes appends cleanly.
				next := s.LastIndex() + 1
				must(t, s.Append(hardState(9, 9, 0), ents(next, next, 9)))
				must(t, s.Sync())
				must(t, s.Close())
				_, rec3 := mustOpen(t, fsys2, sweepOptions)
				if n := len(rec3.Entries); n == 0 || rec3.Entries[n-1].GetIndex() != next || rec3.Entries[n-1].GetTerm() != 9 {
					t.Fatalf("%s: append after recovery lost: %s", name, describeRecovered(rec3))
				}
			}
		}
	}
	t.Logf("%d FS operations in the workload; %d crash points run (every op x %d mode/seed runs); "+
		"%d before Create finished; %d kept unsynced records beyond the acknowledged state; %d second crashes during recovery",
		totalOps, crashPoints, crashPoints/int(totalOps+1), notCreated, beyondAcked, repairCrashes)
	if notCreated == 0 || beyondAcked == 0 || repairCrashes == 0 {
		t.Fatal("the sweep missed a class of crash point")
	}
}

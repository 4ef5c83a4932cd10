package disk

import (
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

// sweepOptions make the workload roll segments over every few records
// (each segment allocated 256 bytes, some records spilling past that) and
// keep two snapshots, so releases happen too.
var sweepOptions = Options{SegmentSizeBytes: 256, SnapshotsKept: 2}

// sweepWorkload drives a Storage through every kind of write: appends with
// and without hard states, batches left unsynced and then synced together,
// raft overwrites of unsynced and synced entries, segment rollovers into
// freshly allocated segments, clean reopens (Close, then Open of a partly
// filled preallocated segment, appending on after its data), local
// snapshots that release segments and old snapshot files, and a snapshot
// from the leader past the end of the log that restarts it. It stops at the
// first error and reports it; m tracks what was issued and acknowledged.
func sweepWorkload(fsys *SimFS, m *logModel, opts Options) error {
	s, err := Create(fsys, "wal", "snap", []byte("member-1"), opts)
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
	// reopen is a process restart without a machine crash: Open returns
	// everything written, synced or not, and makes it durable.
	reopen := func() error {
		if err := s.Close(); err != nil {
			return err
		}
		var rec Recovered
		s, rec, err = Open(fsys, "wal", "snap", opts)
		if err != nil {
			return err
		}
		if got, want := describeRecovered(rec), m.states[len(m.states)-1]; got != want {
			return fmt.Errorf("clean reopen returned %s, want %s", got, want)
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
		reopen, // with 6..8 unsynced, in a segment partly filled
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
		reopen,
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

// crashSweepStats counts the classes of crash point a sweep ran into.
type crashSweepStats struct {
	totalOps, crashPoints int64
	// notCreated: the crash came before Create finished.
	notCreated int
	// beyondAcked: Open kept unsynced records beyond the acknowledged state.
	beyondAcked int
	// repairCrashes: a second crash hit Open's repairs.
	repairCrashes int
	// allocatedEmpty: the newest segment was allocated but held no record
	// (a crash between a rollover's allocation and the segment's head).
	allocatedEmpty int
	// partlyFilled: Open continued in a newest segment whose data ends
	// before its allocation (zeros after the data).
	partlyFilled int
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
//   - Open leaves the newest segment allocated (at least SegmentSizeBytes,
//     or its data if longer), durably, with zeros after its records: the
//     zeros were read as the end of the data, not cut away;
//   - a second crash during that Open's repair, then Open again, returns
//     the same state (sim-faults D11);
//   - the reopened Storage appends, syncs and reopens cleanly.
//
// Among the crash points are crashes between a rollover's allocation and
// the new segment's first record, and reopens of partly filled segments;
// the sweep fails if it meets none of some class.
func TestCrashPointSweep(t *testing.T) {
	st, err := runCrashSweep(sweepOptions)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d FS operations in the workload; %d crash points run (every op x %d mode/seed runs); "+
		"%d before Create finished; %d kept unsynced records beyond the acknowledged state; %d second crashes during recovery; "+
		"%d with the newest segment allocated but empty; %d reopens of a partly filled segment",
		st.totalOps, st.crashPoints, st.crashPoints/(st.totalOps+1), st.notCreated, st.beyondAcked, st.repairCrashes,
		st.allocatedEmpty, st.partlyFilled)
	if st.notCreated == 0 || st.beyondAcked == 0 || st.repairCrashes == 0 || st.allocatedEmpty == 0 || st.partlyFilled == 0 {
		t.Fatalf("the sweep missed a class of crash point: %+v", st)
	}
}

// TestCrashPointSweepCatchesPlantedBugs: the sweep fails on a Storage that
// skips a durability step, so its passing means something.
func TestCrashPointSweepCatchesPlantedBugs(t *testing.T) {
	for _, tc := range []struct {
		name string
		bug  plantedBugs
	}{
		{"allocation not synced before use", plantedBugs{skipAllocationSync: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := sweepOptions
			opts.planted = tc.bug
			_, err := runCrashSweep(opts)
			if err == nil {
				t.Fatal("the sweep passed with the bug planted")
			}
			t.Logf("caught: %v", err)
		})
	}
}

// runCrashSweep runs the sweep TestCrashPointSweep describes with opts and
// returns the first violation it finds.
func runCrashSweep(opts Options) (crashSweepStats, error) {
	var st crashSweepStats
	clean := NewSimFS()
	if err := sweepWorkload(clean, newLogModel(), opts); err != nil {
		return st, fmt.Errorf("workload without faults: %v", err)
	}
	st.totalOps = clean.OpsCount()
	seedsPerMode := map[CrashMode]uint64{CrashLoseUnsynced: 1, CrashTorn: 3, CrashZeroTail: 3}
	for k := int64(0); k <= st.totalOps; k++ {
		for _, mode := range CrashModes {
			for seed := uint64(0); seed < seedsPerMode[mode]; seed++ {
				st.crashPoints++
				name := fmt.Sprintf("op %d of %d, %s, seed %d", k, st.totalOps, mode, seed)
				rng := newRand(uint64(k)*1000 + uint64(mode)*100 + seed)
				fsys := NewSimFS()
				fsys.HaltAfterOps(k)
				m := newLogModel()
				err := sweepWorkload(fsys, m, opts)
				if k < st.totalOps && !errors.Is(err, ErrHalted) {
					return st, fmt.Errorf("%s: workload ended with %v, want ErrHalted", name, err)
				}
				fsys.Crash(rng, mode)

				if !Exists(fsys, "wal") {
					if m.acked > 0 || len(m.states) > 1 {
						return st, fmt.Errorf("%s: Create had returned, but after the crash there is no WAL\n%s", name, fsys)
					}
					st.notCreated++
					s, err := Create(fsys, "wal", "snap", []byte("member-1"), opts)
					if err != nil {
						return st, fmt.Errorf("%s: Create after a crash during Create: %v\n%s", name, err, fsys)
					}
					if err := s.Close(); err != nil {
						return st, err
					}
					continue
				}
				segs, _, err := listSegments(fsys, "wal")
				if err != nil {
					return st, err
				}
				newestName := segs[len(segs)-1].name
				newestData, newestSizeBytes, err := readSegment(fsys, newestName)
				if err != nil {
					return st, err
				}
				if len(segs) > 1 && len(newestData) == 0 && newestSizeBytes > 0 {
					st.allocatedEmpty++
				}
				s, rec, err := Open(fsys, "wal", "snap", opts)
				if err != nil {
					return st, fmt.Errorf("%s: Open refused after a plain crash: %v\n%s", name, err, fsys)
				}
				r := m.match(rec)
				if r < 0 {
					return st, fmt.Errorf("%s: recovered a state that is not a prefix of the writes at or after the acknowledged one\n got %s\nacked %s\n%s",
						name, describeRecovered(rec), m.states[m.acked], fsys)
				}
				if r > m.acked {
					st.beyondAcked++
				}
				if string(rec.Metadata) != "member-1" {
					return st, fmt.Errorf("%s: metadata %q", name, rec.Metadata)
				}
				if err := checkOpenedSegment(fsys, s, opts); err != nil {
					return st, fmt.Errorf("%s: %v\n%s", name, err, fsys)
				}
				if size, _ := fsys.Stat(s.segments[len(s.segments)-1].name); s.openSegmentSizeBytes < size {
					st.partlyFilled++
				}
				if err := s.Close(); err != nil {
					return st, err
				}

				// Crash again during a second Open's repairs, then open again.
				fsys.HaltAfterOps(int64(rng.IntN(4)))
				if _, _, err := Open(fsys, "wal", "snap", opts); err != nil {
					st.repairCrashes++
				}
				fsys.Crash(rng, mode)
				s, rec2, err := Open(fsys, "wal", "snap", opts)
				if err != nil {
					return st, fmt.Errorf("%s: Open after a crash during recovery: %v\n%s", name, err, fsys)
				}
				if describeRecovered(rec2) != describeRecovered(rec) {
					return st, fmt.Errorf("%s: a crash during recovery changed the state\nbefore %s\nafter  %s", name, describeRecovered(rec), describeRecovered(rec2))
				}
				if err := checkOpenedSegment(fsys, s, opts); err != nil {
					return st, fmt.Errorf("%s: after a crash during recovery: %v\n%s", name, err, fsys)
				}
				// The repaired WAL takes appends cleanly.
				next := s.LastIndex() + 1
				if err := s.Append(hardState(9, 9, 0), ents(next, next, 9)); err != nil {
					return st, fmt.Errorf("%s: append after recovery: %v", name, err)
				}
				if err := s.Sync(); err != nil {
					return st, fmt.Errorf("%s: sync after recovery: %v", name, err)
				}
				if err := s.Close(); err != nil {
					return st, err
				}
				_, rec3, err := Open(fsys, "wal", "snap", opts)
				if err != nil {
					return st, fmt.Errorf("%s: Open after an append after recovery: %v", name, err)
				}
				if n := len(rec3.Entries); n == 0 || rec3.Entries[n-1].GetIndex() != next || rec3.Entries[n-1].GetTerm() != 9 {
					return st, fmt.Errorf("%s: append after recovery lost: %s", name, describeRecovered(rec3))
				}
			}
		}
	}
	return st, nil
}

// checkOpenedSegment checks the newest segment as Open leaves it: allocated
// (SegmentSizeBytes, or more if its data is longer), durably, its data
// ending where Storage will append, zeros after.
func checkOpenedSegment(fsys *SimFS, s *Storage, opts Options) error {
	name := s.segments[len(s.segments)-1].name
	data, sizeBytes, err := readSegment(fsys, name)
	if err != nil {
		return err
	}
	if int64(len(data)) != s.openSegmentSizeBytes {
		return fmt.Errorf("after Open %s holds data to %d, Storage appends at %d", name, len(data), s.openSegmentSizeBytes)
	}
	if sizeBytes < min(opts.SegmentSizeBytes, s.openSegmentSizeBytes) || (sizeBytes < opts.SegmentSizeBytes && s.openSegmentSizeBytes < opts.SegmentSizeBytes) {
		return fmt.Errorf("after Open %s is %d bytes with data to %d: not allocated to %d", name, sizeBytes, len(data), opts.SegmentSizeBytes)
	}
	if durable := fsys.DurableSize(name); durable != sizeBytes {
		return fmt.Errorf("after Open %s is %d bytes, %d of them durable", name, sizeBytes, durable)
	}
	return nil
}

package disk

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
)

func createFromSnapshot(fsys FS, opts Options) (*Storage, error) {
	return CreateFromSnapshot(fsys, "wal", "snap", []byte("member-1"), snapshot(7, 3, "state@7"),
		hardState(4, 2, 9), append(ents(8, 8, 3), ents(9, 10, 4)...), opts)
}

const seededWant = "snap=7/3:\"state@7\" hs=(4,2,9) ents=8/3:\"e8t3\" 9/4:\"e9t4\" 10/4:\"e10t4\" "

func describeSeeded(rec Recovered) string {
	return fmt.Sprintf("snap=%d/%d:%q hs=(%d,%d,%d) ents=%s", rec.Snapshot.GetMetadata().GetIndex(), rec.Snapshot.GetMetadata().GetTerm(),
		rec.Snapshot.GetData(), rec.HardState.GetTerm(), rec.HardState.GetVote(), rec.HardState.GetCommit(), describeEntries(rec.Entries))
}

func TestCreateFromSnapshotOpensWithWhatItWasGiven(t *testing.T) {
	fsys := NewSimFS()
	s, err := createFromSnapshot(fsys, sweepOptions)
	must(t, err)
	// It is a WAL like any other: appends continue after the entries given.
	must(t, s.Append(hardState(4, 2, 11), ents(11, 11, 4)))
	must(t, s.Sync())
	must(t, s.Close())
	s, rec := mustOpen(t, fsys, sweepOptions)
	defer s.Close()
	want := "snap=7/3:\"state@7\" hs=(4,2,11) ents=8/3:\"e8t3\" 9/4:\"e9t4\" 10/4:\"e10t4\" 11/4:\"e11t4\" "
	if got := describeSeeded(rec); got != want {
		t.Fatalf("recovered %s\nwant      %s", got, want)
	}
	if _, err := createFromSnapshot(fsys, sweepOptions); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("CreateFromSnapshot over a WAL: %v, want ErrExist", err)
	}
}

func TestCreateFromSnapshotRefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(fsys FS) error
	}{
		{"gap after the snapshot", func(fsys FS) error {
			_, err := CreateFromSnapshot(fsys, "wal", "snap", nil, snapshot(7, 3, "s"), nil, ents(9, 9, 3), Options{})
			return err
		}},
		{"commit past the log", func(fsys FS) error {
			_, err := CreateFromSnapshot(fsys, "wal", "snap", nil, snapshot(7, 3, "s"), hardState(3, 0, 9), ents(8, 8, 3), Options{})
			return err
		}},
		{"term below the snapshot's", func(fsys FS) error {
			_, err := CreateFromSnapshot(fsys, "wal", "snap", nil, snapshot(7, 3, "s"), nil, ents(8, 8, 2), Options{})
			return err
		}},
		{"snapshot at index 0", func(fsys FS) error {
			_, err := CreateFromSnapshot(fsys, "wal", "snap", nil, snapshot(0, 0, "s"), nil, nil, Options{})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := NewSimFS()
			if err := tc.call(fsys); err == nil {
				t.Fatal("accepted")
			}
			if Exists(fsys, "wal") {
				t.Fatal("a WAL was written")
			}
		})
	}
}

// TestCreateFromSnapshotCrashSweep crashes CreateFromSnapshot after every FS
// operation, in every crash mode, and checks that what remains is either no
// WAL at all (and CreateFromSnapshot then works) or the whole of it: never
// a WAL that opens with part of what it was given.
func TestCreateFromSnapshotCrashSweep(t *testing.T) {
	total, none, whole, err := runSeedSweep(createFromSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d FS operations; crashes left no WAL %d times, the whole WAL %d times", total, none, whole)
	if none == 0 || whole == 0 {
		t.Fatal("the sweep missed one of the two outcomes")
	}
}

// TestSeedSweepCatchesAWALThatAppearsFirst: laying the same state out the
// ordinary way (Create, then SaveSnapshot, Append and Sync) lets a crash
// leave a WAL that holds only part of it, and the sweep says so.
func TestSeedSweepCatchesAWALThatAppearsFirst(t *testing.T) {
	naive := func(fsys FS, opts Options) (*Storage, error) {
		s, err := Create(fsys, "wal", "snap", []byte("member-1"), opts)
		if err != nil {
			return nil, err
		}
		if err := s.SaveSnapshot(snapshot(7, 3, "state@7")); err != nil {
			return nil, err
		}
		if err := s.Append(hardState(4, 2, 9), append(ents(8, 8, 3), ents(9, 10, 4)...)); err != nil {
			return nil, err
		}
		return s, s.Sync()
	}
	if _, _, _, err := runSeedSweep(naive); err == nil {
		t.Fatal("the sweep passed a WAL created before its contents")
	} else {
		t.Logf("caught: %v", err)
	}
}

func runSeedSweep(create func(FS, Options) (*Storage, error)) (total int64, none, whole int, err error) {
	clean := NewSimFS()
	if _, err := create(clean, sweepOptions); err != nil {
		return 0, 0, 0, err
	}
	total = clean.OpsCount()
	for k := int64(0); k <= total; k++ {
		for _, mode := range CrashModes {
			for seed := uint64(0); seed < 3; seed++ {
				name := fmt.Sprintf("op %d of %d, %s, seed %d", k, total, mode, seed)
				fsys := NewSimFS()
				fsys.HaltAfterOps(k)
				_, err := create(fsys, sweepOptions)
				if k < total && !errors.Is(err, ErrHalted) {
					return total, none, whole, fmt.Errorf("%s: %v, want ErrHalted", name, err)
				}
				fsys.Crash(newRand(uint64(k)*100+uint64(mode)*10+seed), mode)
				if !Exists(fsys, "wal") {
					none++
					s, err := create(fsys, sweepOptions)
					if err != nil {
						return total, none, whole, fmt.Errorf("%s: no WAL after the crash, and creating it again failed: %v", name, err)
					}
					s.Close()
				} else {
					whole++
				}
				s, rec, err := Open(fsys, "wal", "snap", sweepOptions)
				if err != nil {
					return total, none, whole, fmt.Errorf("%s: Open: %v", name, err)
				}
				s.Close()
				if got := describeSeeded(rec); got != seededWant {
					return total, none, whole, fmt.Errorf("%s: recovered %s, want %s", name, got, seededWant)
				}
			}
		}
	}
	return total, none, whole, nil
}

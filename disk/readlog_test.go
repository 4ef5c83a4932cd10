package disk

import "testing"

// ReadLog returns what the retained WAL holds, the entries a snapshot covers
// included, where Open returns only those after the snapshot; overwritten
// entries are replaced, and a torn tail ends the log without being cut.
func TestReadLogKeepsEntriesBelowTheSnapshot(t *testing.T) {
	fsys := NewSimFS()
	s := mustCreate(t, fsys, Options{})
	must(t, s.Append(hardState(1, 1, 4), ents(1, 6, 1)))
	must(t, s.Append(hardState(2, 1, 5), ents(5, 7, 2))) // 5 and 6 replaced at term 2
	must(t, s.Sync())
	must(t, s.SaveSnapshot(snapshot(5, 2, "state at 5")))
	must(t, s.Append(hardState(2, 1, 7), ents(8, 9, 2)))
	must(t, s.Sync())
	must(t, s.Close())

	hs, got, err := ReadLog(fsys, "wal")
	if err != nil {
		t.Fatal(err)
	}
	want := describeEntries(append(ents(1, 4, 1), ents(5, 9, 2)...))
	if describeEntries(got) != want {
		t.Fatalf("ReadLog entries:\n got %s\nwant %s", describeEntries(got), want)
	}
	if hs.GetCommit() != 7 || hs.GetTerm() != 2 {
		t.Fatalf("hard state %v, want term 2 commit 7", hs)
	}
	_, rec := mustOpen(t, fsys, Options{})
	if describeEntries(rec.Entries) != describeEntries(ents(6, 9, 2)) {
		t.Fatalf("Open entries %s: the comparison assumes Open starts after the snapshot", describeEntries(rec.Entries))
	}
}

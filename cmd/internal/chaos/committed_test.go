package chaos

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// wal builds a WAL holding entries first..last, each a put of its index
// under the term terms gives it, with the hard state's commit.
func wal(name string, current bool, commit, first, last uint64, term func(i uint64) uint64) *walLog {
	w := &walLog{name: name, current: current, commit: commit, first: first, last: last, entries: map[uint64]*raftpb.Entry{}}
	for i := first; i <= last; i++ {
		r := &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: i*100 + term(i)},
			Put: &pb.PutRequest{Key: []byte("k"), Value: []byte(fmt.Sprint(i, "/", term(i)))}}
		data, _ := proto.Marshal(r)
		w.entries[i] = &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(term(i)), Type: raftpb.EntryNormal.Enum(), Data: data}
	}
	return w
}

func termOne(uint64) uint64 { return 1 }

func indexes(t *testing.T, wals []*walLog, floor uint64) string {
	t.Helper()
	got, _, err := committedLog(wals, floor)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range got {
		fmt.Fprintf(&b, "%d ", e.Index)
	}
	return strings.TrimSpace(b.String())
}

func TestCommittedLogStitchesWALs(t *testing.T) {
	// m1 started from a snapshot at 4 (a replaced member); m2 holds the
	// start but its commit lags; m1's entry at 5 matches m2's, so m2's
	// entries below it are committed too.
	m1 := wal("m1", true, 8, 5, 8, termOne)
	m2 := wal("m2", true, 3, 1, 6, termOne)
	if got := indexes(t, []*walLog{m1, m2}, 0); got != "1 2 3 4 5 6 7 8" {
		t.Fatalf("stitched log: %s", got)
	}
	// A gap no WAL covers is an error, not a guess.
	m3 := wal("m3", true, 8, 6, 8, termOne)
	m4 := wal("m4", true, 3, 1, 4, termOne)
	if _, _, err := committedLog([]*walLog{m3, m4}, 0); err == nil || !strings.Contains(err.Error(), "no WAL shows index 4") {
		t.Fatalf("gap: %v", err)
	}
}

func TestCommittedLogDisagreementIsAViolation(t *testing.T) {
	a := wal("a", true, 5, 1, 5, termOne)
	b := wal("b", true, 5, 1, 5, func(i uint64) uint64 { return map[bool]uint64{true: 2, false: 1}[i == 4] })
	_, _, err := committedLog([]*walLog{a, b}, 0)
	if !errors.Is(err, errLogDisagreement) {
		t.Fatalf("two committed logs that differ at 4: %v", err)
	}
}

// An old incarnation's entries past its own commit were never committed
// (the member was removed with a tail another leader overwrote): only the
// member's last incarnation, which converged, counts up to the applied
// floor.
func TestCommittedLogOldIncarnationTail(t *testing.T) {
	cur := wal("m1", true, 3, 1, 6, func(i uint64) uint64 { return map[bool]uint64{true: 2, false: 1}[i >= 5] })
	old := wal("m2 incarnation 1", false, 4, 1, 6, termOne)
	if got := indexes(t, []*walLog{cur, old}, 6); got != "1 2 3 4 5 6" {
		t.Fatalf("log: %s", got)
	}
	got, _, _ := committedLog([]*walLog{cur, old}, 6)
	if string(got[4].Request.GetPut().GetValue()) != "5/2" {
		t.Fatalf("index 5 taken from the old incarnation's uncommitted tail: %s", got[4].Request.GetPut().GetValue())
	}
}

// A request appended twice is applied once, as members do.
func TestCommittedLogSkipsDuplicates(t *testing.T) {
	w := wal("m1", true, 3, 1, 3, termOne)
	w.entries[3].Data = w.entries[2].Data
	if got := indexes(t, []*walLog{w}, 0); got != "1 2" {
		t.Fatalf("log: %s", got)
	}
}

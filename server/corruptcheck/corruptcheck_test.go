package corruptcheck

import (
	"context"
	"errors"
	"slices"
	"testing"

	"go.uber.org/zap"
)

func TestMismatched(t *testing.T) {
	h := func(id uint64, rev, compact int64, hash uint32) Hash {
		return Hash{MemberID: id, Revision: rev, CompactRevision: compact, Hash: hash}
	}
	for _, tc := range []struct {
		name   string
		hashes []Hash
		want   []uint64
	}{
		{"all agree", []Hash{h(1, 10, 0, 7), h(2, 10, 0, 7), h(3, 10, 0, 7)}, nil},
		{"one follower diverged", []Hash{h(1, 10, 0, 7), h(2, 10, 0, 7), h(3, 10, 0, 9)}, []uint64{3}},
		{"the leader diverged", []Hash{h(1, 10, 0, 9), h(2, 10, 0, 7), h(3, 10, 0, 7)}, []uint64{1}},
		{"no majority: the leader trusts itself", []Hash{h(1, 10, 0, 7), h(2, 10, 0, 9)}, []uint64{2}},
		{"three ways", []Hash{h(1, 10, 0, 7), h(2, 10, 0, 8), h(3, 10, 0, 9)}, []uint64{2, 3}},
		{"another compact revision is not compared", []Hash{h(1, 10, 5, 7), h(2, 10, 6, 9), h(3, 10, 5, 7)}, nil},
		{"never compacted: 0 and -1 agree", []Hash{h(1, 10, 0, 7), h(2, 10, -1, 9), h(3, 10, -1, 7)}, []uint64{2}},
		{"alone", []Hash{h(1, 10, 0, 7)}, nil},
		{"none", nil, nil},
	} {
		if got := Mismatched(tc.hashes); !slices.Equal(got, tc.want) {
			t.Errorf("%s: Mismatched = %x, want %x", tc.name, got, tc.want)
		}
	}
}

type fakeSource struct {
	local Hash
	peers map[uint64]Hash
	down  map[uint64]bool
	asked []int64
}

func (f *fakeSource) Local(rev int64) (Hash, error) { return f.local, nil }
func (f *fakeSource) Peers() []uint64 {
	var ids []uint64
	for id := range f.peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
func (f *fakeSource) Peer(_ context.Context, id uint64, rev int64) (Hash, error) {
	f.asked = append(f.asked, rev)
	if f.down[id] {
		return Hash{}, errors.New("connection refused")
	}
	return f.peers[id], nil
}

func TestInitial(t *testing.T) {
	lg := zap.NewNop()
	ok := &fakeSource{local: Hash{1, 10, 0, 7}, peers: map[uint64]Hash{2: {2, 10, 0, 7}, 3: {3, 10, 0, 7}}}
	if err := Initial(context.Background(), lg, 1, ok); err != nil {
		t.Fatalf("agreeing peers: %v", err)
	}
	if !slices.Equal(ok.asked, []int64{10, 10}) {
		t.Errorf("peers asked at revisions %v, want the local revision", ok.asked)
	}
	bad := &fakeSource{local: Hash{1, 10, 0, 9}, peers: map[uint64]Hash{2: {2, 10, 0, 7}, 3: {3, 10, 0, 7}}, down: map[uint64]bool{3: true}}
	err := Initial(context.Background(), lg, 1, bad)
	var inc *ErrInconsistent
	if !errors.As(err, &inc) || err.Error() != "1 found data inconsistency with peers" {
		t.Fatalf("a disagreeing peer: %v", err)
	}
	skipped := &fakeSource{local: Hash{1, 10, 0, 9}, peers: map[uint64]Hash{2: {2, 10, 4, 7}}, down: map[uint64]bool{}}
	if err := Initial(context.Background(), lg, 1, skipped); err != nil {
		t.Fatalf("a peer compacted elsewhere is not compared: %v", err)
	}
}

package node

import (
	"errors"
	"slices"
	"testing"
)

// rawKV stands in for the store's snapshot in envelope tests.
type rawKV string

func (r rawKV) SnapshotSizeBytes() int         { return len(r) }
func (r rawKV) AppendSnapshot(b []byte) []byte { return append(b, r...) }

func TestSnapshotEnvelopeRoundTrip(t *testing.T) {
	var ms membership
	ms.put(Member{ID: 3, Name: "c", PeerURLs: []string{"http://c:2380"}})
	ms.put(Member{ID: 1, Name: "a", PeerURLs: []string{"http://a:2380"}, ClientURLs: []string{"http://a:2379"}, IsLearner: true})
	ms.remove(9)
	data := encodeSnapshot(rawKV("kv-state"), &ms, []uint64{5, 6, 7})
	parts, err := decodeSnapshot(data)
	if err != nil {
		t.Fatal(err)
	}
	if string(parts.kv) != "kv-state" || !slices.Equal(parts.requests, []uint64{5, 6, 7}) || !slices.Equal(parts.membership.removed, []uint64{9}) {
		t.Fatalf("round trip: %+v", parts)
	}
	if len(parts.membership.members) != 2 || parts.membership.members[0].String() != ms.members[0].String() ||
		parts.membership.members[1].String() != ms.members[1].String() {
		t.Fatalf("members: %v, want %v", parts.membership.members, ms.members)
	}
}

// Every truncation and every single-byte change of a valid envelope either
// decodes or fails with errSnapshotMalformed: never a panic.
func TestSnapshotEnvelopeRefusesDamage(t *testing.T) {
	var ms membership
	ms.put(Member{ID: 1, Name: "a", PeerURLs: []string{"http://a:2380"}})
	data := encodeSnapshot(rawKV("kv"), &ms, []uint64{1})
	for n := 0; n < len(data); n++ {
		if _, err := decodeSnapshot(data[:n]); !errors.Is(err, errSnapshotMalformed) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
	for i := range data {
		for _, b := range []byte{0x00, 0xff, data[i] ^ 0x80} {
			d := slices.Clone(data)
			d[i] = b
			if _, err := decodeSnapshot(d); err != nil && !errors.Is(err, errSnapshotMalformed) {
				t.Fatalf("byte %d = %#x: unexpected error %v", i, b, err)
			}
		}
	}
	if _, err := decodeSnapshot(append(slices.Clone(data), 0)); !errors.Is(err, errSnapshotMalformed) {
		t.Fatalf("trailing byte: %v", err)
	}
}

func TestRequestWindowForgetsOldest(t *testing.T) {
	rw := newRequestWindow()
	for id := uint64(1); id <= RequestWindowSize+10; id++ {
		if rw.contains(id) {
			t.Fatalf("%d seen before it was added", id)
		}
		rw.add(id)
	}
	for id := uint64(1); id <= 10; id++ {
		if rw.contains(id) {
			t.Fatalf("%d still remembered past the window", id)
		}
	}
	if !rw.contains(11) || !rw.contains(RequestWindowSize+10) {
		t.Fatal("lost an ID inside the window")
	}
	order := rw.ordered()
	if len(order) != RequestWindowSize || order[0] != 11 || order[len(order)-1] != RequestWindowSize+10 {
		t.Fatalf("ordered: first %d last %d len %d", order[0], order[len(order)-1], len(order))
	}
	again := requestWindowFrom(order)
	if !slices.Equal(again.ordered(), order) {
		t.Fatal("window does not survive a snapshot round trip")
	}
}

func TestLeaseClock(t *testing.T) {
	lc := newLeaseClock()
	lc.set(1, 10)
	lc.set(2, 5)
	lc.set(3, 5)
	if got := lc.popExpired(4, 10); len(got) != 0 {
		t.Fatalf("expired before time: %v", got)
	}
	// Equal ticks pop in ID order; the limit holds the rest back.
	if got := lc.popExpired(5, 1); !slices.Equal(got, []int64{2}) {
		t.Fatalf("got %v, want [2]", got)
	}
	lc.set(3, 20) // renewed: its old wake-up is stale
	if got := lc.popExpired(10, 10); !slices.Equal(got, []int64{1}) {
		t.Fatalf("got %v, want [1]", got)
	}
	// An expired lease stays expired until forgotten; a retry wake-up
	// brings it back.
	lc.wakeAt(1, 15)
	if got := lc.popExpired(15, 10); !slices.Equal(got, []int64{1}) {
		t.Fatalf("retry: got %v, want [1]", got)
	}
	lc.forget(1)
	lc.wakeAt(1, 16)
	if got := lc.popExpired(30, 10); !slices.Equal(got, []int64{3}) {
		t.Fatalf("got %v, want [3]", got)
	}
	// Many renewals leave stale items; the queue stays bounded.
	for i := 0; i < 10000; i++ {
		lc.set(7, int64(100+i))
	}
	if len(lc.queue) > staleExpiryItemsFactor*len(lc.expiryTick)+staleExpiryItemsSlack+1 {
		t.Fatalf("queue grew to %d for %d leases", len(lc.queue), len(lc.expiryTick))
	}
}

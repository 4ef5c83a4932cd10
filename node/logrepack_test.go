package node

import (
	"bytes"
	"fmt"
	"math"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
)

// TestPackEntriesCopiesExactly: every copy encodes to its original's bytes
// (fields unset stay unset, nil data stays nil, empty data stays empty),
// shares no memory with it, and all copies take five allocations.
func TestPackEntriesCopiesExactly(t *testing.T) {
	normal, conf := raftpb.EntryType_EntryNormal, raftpb.EntryType_EntryConfChangeV2
	ents := []*raftpb.Entry{
		{Term: proto.Uint64(3), Index: proto.Uint64(10), Type: &normal, Data: []byte("put a")},
		{Term: proto.Uint64(3), Index: proto.Uint64(11)},                                  // no type, nil data: an empty entry of a new leader
		{Term: proto.Uint64(3), Index: proto.Uint64(12), Data: []byte{}},                  // empty, not nil
		{Term: proto.Uint64(4), Index: proto.Uint64(13), Type: &conf, Data: []byte("cc")}, // a configuration change
		{Index: proto.Uint64(14), Data: bytes.Repeat([]byte("v"), 300)},                   // no term
	}
	packed := packEntries(ents)
	if len(packed) != len(ents) {
		t.Fatalf("%d copies of %d entries", len(packed), len(ents))
	}
	for i, e := range ents {
		c := packed[i]
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) || !proto.Equal(c, e) {
			t.Fatalf("entry %d: copy %v encodes as %x, the original %v as %x", i, c, got, e, want)
		}
		if (c.Data == nil) != (e.Data == nil) {
			t.Fatalf("entry %d: data nil %t, original nil %t", i, c.Data == nil, e.Data == nil)
		}
		if c == e || (e.Term != nil && c.Term == e.Term) {
			t.Fatalf("entry %d: the copy shares its message or fields with its original", i)
		}
		if large := len(e.Data) > kvsm.RepackValueBytesMax; len(e.Data) > 0 && (&c.Data[0] == &e.Data[0]) != large {
			t.Fatalf("entry %d of %d bytes: data shared %t, want %t", i, len(e.Data), !large, large)
		}
		if len(e.Data) <= kvsm.RepackValueBytesMax && cap(c.Data) != len(c.Data) {
			t.Fatalf("entry %d: data capacity %d beyond its length %d", i, cap(c.Data), len(c.Data))
		}
	}
	// The messages, their numbers, their types, the data and the list of
	// copies: five allocations however many entries there are.
	if allocs := testing.AllocsPerRun(10, func() { packEntries(ents) }); allocs != 5 {
		t.Fatalf("packing %d entries made %v allocations, want 5", len(ents), allocs)
	}
}

// TestRepackLogKeepsTheLog repacks the leader's in-memory log in the
// middle of a run: the log reads the same before and after, and a
// follower that was cut off while the leader wrote catches up from the
// repacked entries, after which every member holds the same keys.
func TestRepackLogKeepsTheLog(t *testing.T) {
	e := newScriptEnv(t)
	e.run(&scriptCmd{name: "bootstrap", kv: map[string]string{"n": "3", "catch-up": "1000"}})
	e.run(&scriptCmd{name: "campaign", args: []string{"1"}})
	e.run(&scriptCmd{name: "partition", args: []string{"1", "2", "|", "3"}})
	leader := e.up(1)
	put := func(i int) {
		e.handle++
		leader.node.Submit(e.handle, &pb.PutRequest{Key: []byte(fmt.Sprintf("k%03d", i)), Value: bytes.Repeat([]byte{byte(i)}, i)})
	}
	for i := range 200 {
		put(i)
		if i%10 == 0 {
			e.stabilize()
		}
	}
	e.stabilize()
	before := logBytes(t, leader.node)
	if n := leader.node.RepackLog(); n < 200 {
		t.Fatalf("repacked %d entries, want the 200 puts and more", n)
	}
	if after := logBytes(t, leader.node); !bytes.Equal(after, before) {
		t.Fatal("the log reads differently after the repack")
	}
	for i := 200; i < 220; i++ {
		put(i)
	}
	e.run(&scriptCmd{name: "heal"})
	e.stabilize()
	for h := Handle(1); h <= e.handle; h++ {
		if r, ok := e.results[h]; !ok || r.Err != nil {
			t.Fatalf("request %d: answered=%t %s", h, ok, describeResult(r))
		}
	}
	want := e.up(1).node.store.StateHash()
	for _, id := range []uint64{2, 3} {
		if got := e.up(id).node.store.StateHash(); got != want {
			t.Fatalf("member %d's state differs from the leader's after catching up from the repacked log", id)
		}
	}
}

// logBytes encodes every entry of n's in-memory log, in order.
func logBytes(t *testing.T, n *Node) []byte {
	t.Helper()
	first, _ := n.storage.FirstIndex()
	last, _ := n.storage.LastIndex()
	ents, err := n.storage.Entries(first, last+1, math.MaxUint64)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, e := range ents {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

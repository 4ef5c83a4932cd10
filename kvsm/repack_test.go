package kvsm

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// TestRepackKeepsStateAndViews repacks a store in small steps with writes
// between them, beside a twin store given the same writes and never
// repacked: the two keep the same state hash and snapshot bytes, a View
// taken before the repack (read on another goroutine meanwhile, which
// -race checks) reads as it did, and the repacked keys really did move.
func TestRepackKeepsStateAndViews(t *testing.T) {
	s, twin := New(Config{}), New(Config{})
	both := func(r *pb.InternalRaftRequest) {
		t.Helper()
		mustApply(t, s, r)
		mustApply(t, twin, proto.Clone(r).(*pb.InternalRaftRequest))
	}
	both(grantReq(7, 60))
	for i := range 3000 {
		k := fmt.Sprintf("k%04d", i%1200)
		switch {
		case i%97 == 0:
			both(delReq(k, ""))
		case i%31 == 0:
			both(putReq(k, "")) // empty values stay what they are
		case i%53 == 0:
			both(putReq(k, strings.Repeat("L", RepackValueBytesMax+1)))
		case i%5 == 0:
			both(putLeaseReq(k, fmt.Sprintf("leased-%d", i), 7))
		default:
			both(putReq(k, fmt.Sprintf("v%d-%s", i, strings.Repeat("x", i%300))))
		}
	}
	both(compactReq(s.Rev() - 500))

	view := s.View()
	rangeAll := &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}
	want, err := view.Range(rangeAll)
	if err != nil {
		t.Fatal(err)
	}
	readerDone := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := view.Range(rangeAll)
			if err != nil || !proto.Equal(got, want) {
				t.Errorf("a view taken before the repack reads differently during it (%v)", err)
				return
			}
		}
	}()

	before := map[string]*keyEntry{}
	type revAt struct {
		e     *keyEntry
		i     int
		value []byte
	}
	var oldRevs []revAt
	s.kv.keys.Scan(func(e *keyEntry) bool {
		before[string(e.key)] = e
		for i := range e.revs {
			oldRevs = append(oldRevs, revAt{e, i, e.revs[i].value()})
		}
		return true
	})
	var r Repacker
	for step := 0; !s.RepackStep(&r, 37); step++ {
		if step%4 == 0 {
			both(putReq(fmt.Sprintf("k%04d", (step*131)%1300), fmt.Sprintf("between-%d", step)))
		}
		if step > 1000 {
			t.Fatal("the repack does not end")
		}
	}
	close(stop)
	<-readerDone
	for _, o := range oldRevs {
		if got := o.e.revs[o.i].value(); len(got) != len(o.value) || (len(got) > 0 && &got[0] != &o.value[0]) {
			t.Fatalf("the repack changed an entry in place (key %q): entries are immutable, Views share them", o.e.key)
		}
	}
	if r.KeysRepacked() < len(before) {
		t.Fatalf("repacked %d keys of %d", r.KeysRepacked(), len(before))
	}
	if s.StateHash() != twin.StateHash() || !bytes.Equal(s.Snapshot(), twin.Snapshot()) {
		t.Fatal("the repacked store's state differs from its twin's")
	}
	mustInvariants(t, s)
	moved := 0
	s.kv.keys.Scan(func(e *keyEntry) bool {
		if old, ok := before[string(e.key)]; ok && old != e {
			moved++
		}
		return true
	})
	if moved < len(before)*9/10 {
		t.Fatalf("only %d of %d key entries moved", moved, len(before))
	}
	// The revision log and the lease share each key's bytes with its
	// entry, as before: nothing holds on to the memory the repack let go.
	for _, c := range s.revLog.chunks {
		for i := range c {
			e := s.lookup(c[i].key)
			if e == nil || &e.key[0] != &c[i].key[0] {
				t.Fatalf("revision %d.%d of %q does not share its entry's key", c[i].main, c[i].sub, c[i].key)
			}
		}
	}
	leased := 0
	s.getLease(7).keys.Scan(func(k []byte) bool {
		if e := s.lookup(k); e == nil || &e.key[0] != &k[0] {
			t.Fatalf("lease 7's key %q does not share its entry's key", k)
		}
		leased++
		return true
	})
	if leased == 0 {
		t.Fatal("no key is attached to lease 7; the test proves nothing about leases")
	}
	// The repacked store goes on applying like its twin.
	for i := range 500 {
		both(putReq(fmt.Sprintf("k%04d", i*3), fmt.Sprintf("after-%d", i)))
	}
	both(compactReq(s.Rev() - 10))
	if s.StateHash() != twin.StateHash() {
		t.Fatal("the repacked store diverged from its twin after more writes")
	}
}

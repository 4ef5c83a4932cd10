package kvsm

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// exportWorkload applies a seeded mix of puts (some leased), deletes,
// txns, lease grants and revokes with explicit IDs (as etcd proposes them)
// and compactions.
func exportWorkload(t *testing.T, seed uint64, steps int) *Store {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	s := New(Config{})
	leases := []int64{}
	key := func() string { return fmt.Sprintf("k%02d", rng.IntN(20)) }
	for i := 0; i < steps; i++ {
		var r *pb.InternalRaftRequest
		switch n := rng.IntN(20); {
		case n < 8:
			r = putReq(key(), fmt.Sprintf("v%d", i))
			if len(leases) > 0 && rng.IntN(3) == 0 {
				r = putLeaseReq(key(), "", leases[rng.IntN(len(leases))])
			}
		case n < 11:
			k := key()
			end := ""
			if rng.IntN(2) == 0 {
				end = k + "5"
			}
			r = delReq(k, end)
		case n < 14:
			r = txnReq(&pb.TxnRequest{
				Compare: []*pb.Compare{cmpVersion(key(), pb.Compare_GREATER, 1)},
				Success: []*pb.RequestOp{opPut("a"+key(), "s"), opPut("b"+key(), "s")},
				Failure: []*pb.RequestOp{opDel(key(), "")},
			})
		case n < 16:
			id := int64(1000 + i)
			r = grantReq(id, 60)
			leases = append(leases, id)
		case n < 17 && len(leases) > 0:
			j := rng.IntN(len(leases))
			r = revokeReq(leases[j])
			leases = append(leases[:j], leases[j+1:]...)
		case n < 18 && s.Rev() > s.CompactRev()+1:
			r = compactReq(s.CompactRev() + 1 + rng.Int64N(s.Rev()-s.CompactRev()))
		default:
			r = putReq(key(), "")
		}
		s.Apply(r)
	}
	mustInvariants(t, s)
	return s
}

// rebuild copies s through ScanRevisions and a Builder.
func rebuild(t *testing.T, s *Store, compactRev int64, extra ...Revision) (*Store, error) {
	t.Helper()
	b := NewBuilder(Config{})
	var prev Revision
	first := true
	s.View().ScanRevisions(func(r Revision) bool {
		if !first && !(prev.ModRev < r.ModRev || prev.ModRev == r.ModRev && prev.ModSub < r.ModSub) {
			t.Fatalf("revisions out of order: %s after %s", r.String(), prev.String())
		}
		prev, first = r, false
		if err := b.AddRevision(r); err != nil {
			t.Fatal(err)
		}
		return true
	})
	for _, r := range extra {
		if err := b.AddRevision(r); err != nil {
			return nil, err
		}
	}
	for _, l := range s.Leases() {
		if err := b.AddLease(l.ID, l.GrantedTTLSeconds); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range s.Alarms() {
		if err := b.AddAlarm(a.GetMemberID(), a.GetAlarm()); err != nil {
			t.Fatal(err)
		}
	}
	return b.Build(s.Rev(), compactRev)
}

func TestBuilderRebuildsTheSameState(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		s := exportWorkload(t, seed, 300)
		s.Apply(&pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: 7, Alarm: pb.AlarmType_NOSPACE}})
		got, err := rebuild(t, s, s.CompactRev())
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if got.StateHash() != s.StateHash() {
			t.Fatalf("seed %d: rebuilt state differs", seed)
		}
		h1, _, _, _ := s.HashKV(0)
		h2, _, _, _ := got.HashKV(0)
		if h1 != h2 {
			t.Fatalf("seed %d: HashKV %08x, rebuilt %08x", seed, h1, h2)
		}
	}
}

// A backend whose compaction had not finished still holds revisions the
// compaction drops; the Builder drops them as the compaction would have.
func TestBuilderFinishesACompaction(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		s := exportWorkload(t, seed, 300)
		uncompacted, err := rebuild(t, s, s.CompactRev())
		if err != nil {
			t.Fatal(err)
		}
		at := s.CompactRev() + (s.Rev()-s.CompactRev())/2
		if at <= s.CompactRev() {
			continue
		}
		uncompacted.Apply(compactReq(at))
		// Rebuilding the uncompacted history with the later compact
		// revision must give what the compaction gave.
		got, err := rebuild(t, s, at)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if got.StateHash() != uncompacted.StateHash() {
			t.Fatalf("seed %d: building at compact revision %d differs from compacting at it", seed, at)
		}
	}
}

func TestBuilderRefusesBrokenHistories(t *testing.T) {
	s := New(Config{})
	mustApply(t, s, putReq("a", "1"))
	mustApply(t, s, putReq("a", "2"))
	for _, tc := range []struct {
		name  string
		extra Revision
		want  string
	}{
		{"a revision twice", Revision{Key: []byte("a"), Value: []byte("x"), ModRev: 3, CreateRev: 2, Version: 2}, "twice"},
		{"a version gap", Revision{Key: []byte("a"), Value: []byte("x"), ModRev: 4, CreateRev: 2, Version: 4}, "version"},
		{"a leased key without its lease", Revision{Key: []byte("b"), Value: []byte("x"), ModRev: 4, CreateRev: 4, Version: 1, Lease: 9}, "lease"},
		{"an empty key", Revision{Value: []byte("x"), ModRev: 4, CreateRev: 4, Version: 1}, "empty key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rebuild(t, s, 0, tc.extra)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
}

// MarkRevision raises the revision without a key, as a restore that bumps
// the revision leaves it.
func TestBuilderMarkedRevision(t *testing.T) {
	b := NewBuilder(Config{})
	if err := b.AddRevision(Revision{Key: []byte("a"), Value: []byte("1"), ModRev: 2, CreateRev: 2, Version: 1}); err != nil {
		t.Fatal(err)
	}
	b.MarkRevision(1002)
	s, err := b.Build(0, 1002)
	if err != nil {
		t.Fatal(err)
	}
	if s.Rev() != 1002 || s.CompactRev() != 1002 {
		t.Fatalf("rev %d compact %d, want 1002 1002", s.Rev(), s.CompactRev())
	}
	if kv := get(t, s, "a", 0); kv == nil || string(kv.Value) != "1" {
		t.Fatalf("a = %v", kv)
	}
	mustInvariants(t, s)
}

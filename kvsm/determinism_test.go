package kvsm

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestPinnedTrace runs a seeded workload (puts, deletes, txns, leases,
// compactions, watches) and pins the hash of its whole trace, the state hash
// and HashKV. The same pins must hold natively and under WebAssembly:
//
//	GOOS=js GOARCH=wasm go test ./kvsm/ -run PinnedTrace -exec "$(go env GOROOT)/lib/wasm/go_js_wasm_exec"
//
// A change that moves a pin changes replicated behaviour: review it as such.
func TestPinnedTrace(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := New(Config{MinLeaseTTLSeconds: 2})
	trace := fnv.New64a()
	s.WatchCreate(1, &pb.WatchCreateRequest{Key: []byte("k"), RangeEnd: []byte("l"), PrevKv: true})
	s.WatchCreate(2, &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: 1})
	key := func() []byte { return fmt.Appendf(nil, "k%02d", rng.IntN(40)) }
	for i := range 3000 {
		var r *pb.InternalRaftRequest
		switch rng.IntN(10) {
		case 0, 1, 2, 3:
			r = &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: key(), Value: fmt.Appendf(nil, "v%d", i), PrevKv: rng.IntN(2) == 0}}
		case 4:
			r = &pb.InternalRaftRequest{DeleteRange: &pb.DeleteRangeRequest{Key: key(), RangeEnd: key(), PrevKv: true}}
		case 5, 6:
			k := key()
			r = txnReq(&pb.TxnRequest{
				Compare: []*pb.Compare{cmpVersion(string(k), pb.Compare_LESS, int64(rng.IntN(4)))},
				Success: []*pb.RequestOp{opPut(string(k), "t"), opGet("k00")},
				Failure: []*pb.RequestOp{opDel(string(k), ""), {Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), SortTarget: pb.RangeRequest_VALUE, Limit: 3}}}},
			})
		case 7:
			r = grantReq(0, int64(rng.IntN(5)))
		case 8:
			r = revokeReq(int64(rng.IntN(10)))
		case 9:
			r = compactReq(s.Rev() - int64(rng.IntN(20)))
		}
		fmt.Fprintln(trace, s.Apply(r))
		if i%7 == 0 {
			for _, resp := range s.WatchPoll(50) {
				fmt.Fprintln(trace, resp)
			}
		}
	}
	hashKV, _, _, err := s.HashKV(0)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("trace=%016x state=%016x hashkv=%08x rev=%d", trace.Sum64(), s.StateHash(), hashKV, s.Rev())
	const want = "trace=d782306339b622a6 state=427b64eeea9bfb20 hashkv=17f4ac2d rev=1797"
	if got != want {
		t.Fatalf("pinned trace moved:\n got  %s\n want %s", got, want)
	}
}

package node

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestPutBeforeMoveLeaderInOneRound: a put and a leadership transfer
// handed to the leader in the same round (before it is asked for effects)
// are proposed in that order: the put is committed, not refused because
// raft was already transferring when the batched proposal reached it.
func TestPutBeforeMoveLeaderInOneRound(t *testing.T) {
	e := newScriptEnv(t)
	e.run(&scriptCmd{name: "bootstrap", kv: map[string]string{"n": "3"}})
	e.run(&scriptCmd{name: "campaign", args: []string{"1"}})
	leader := e.up(1)
	put, move := e.handle+1, e.handle+2
	e.handle += 2
	leader.node.Submit(put, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	leader.node.Submit(move, &pb.MoveLeaderRequest{TargetID: 2})
	e.stabilize()
	r, ok := e.results[put]
	if !ok || r.Err != nil {
		t.Fatalf("the put made before the transfer: answered=%t %s, want committed", ok, describeResult(r))
	}
	if got := describeResult(e.results[move]); got != "move-leader ok" {
		t.Fatalf("the transfer: %s", got)
	}
}

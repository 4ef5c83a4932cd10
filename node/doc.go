// Package node is one noded member as a step function: raft.RawNode with
// pre-vote and check-quorum, the kvsm state machine, leases, linearizable and
// serializable reads, watches, snapshots and membership. Events go in (ticks,
// inbound messages, client requests, disk completions); an effects batch comes
// out (disk writes, messages, client results). It never blocks, never starts
// a goroutine and never reads a clock: time is ticks handed in.
//
// node is deterministic. It may import kvsm, the standard library except
// os, net, sync, time, math/rand and crypto/rand, go.etcd.io/raft/v3,
// go.etcd.io/etcd/api/v3 and google.golang.org/protobuf.
package node

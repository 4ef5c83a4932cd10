// Package kvsm is noded's MVCC key-value state machine: the etcd v3 data
// model (revisions, versions, tombstones, compaction), leases as state, the
// watcher registry and whole-state snapshots. Every member applies committed
// raft entries to one Store; the same entries in the same order give the same
// state and the same hash on every member.
//
// kvsm is deterministic. It may import the standard library except os, net,
// sync, time, math/rand and crypto/rand; github.com/tidwall/btree;
// go.etcd.io/etcd/api/v3 (etcdserverpb, mvccpb, v3rpc/rpctypes) and
// google.golang.org/protobuf. It imports no other noded package.
package kvsm

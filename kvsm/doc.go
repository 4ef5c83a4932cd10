// Package kvsm is noded's MVCC key-value state machine: the etcd v3 data
// model (revisions, versions, tombstones, compaction), leases as state, the
// watcher registry and whole-state snapshots. Every member applies committed
// raft entries to one Store; the same entries in the same order give the same
// state and the same hash on every member.
//
// kvsm is deterministic. It may import the standard library except os, net,
// sync, time, math/rand and crypto/rand; github.com/tidwall/btree;
// go.etcd.io/etcd/api/v3 (etcdserverpb, mvccpb, v3rpc/rpctypes) and
// google.golang.org/protobuf. It imports no other noded package. unsafe
// appears in one place, keyRev's value reference (store.go).
//
// # Layout
//
// The store keeps no mvccpb.KeyValue per revision. A copy-on-write B-tree
// (tidwall/btree) maps each key to an immutable keyEntry holding the key's
// kept history as a compact slice of keyRev (value, mod/create revision,
// version, lease; a tombstone is version 0). A write stores a successor
// entry, so a View (an O(1) Copy of the tree) never sees memory change. A
// chunked, append-only revision log lists every kept (revision, key) at or
// above the compact revision in order: watch catch-up reads history from it
// and compaction walks it. With 1M keys of 16-byte keys and 256-byte values
// this costs about 185 bytes per key beyond the key and value
// (BenchmarkLoadMemory).
//
// # Files
//
//	store.go     Config, Store, keyEntry/keyRev and their invariants
//	revlog.go    the revision log
//	read.go      Range, compares, ReadTxn, View
//	validate.go  Validate: etcd's API-layer checks, the duplicate-key rule
//	apply.go     Apply: put, delete, txn, compaction
//	lease.go     leases as state
//	alarm.go     alarms as state
//	auth.go      the auth state (users, roles, permissions, revision) and the permission checks
//	auth_apply.go  the auth requests
//	auth_snapshot.go  the auth section of a snapshot, and its invariants
//	watch.go     the watcher registry
//	snapshot.go  Snapshot/Restore/Replace, StateHash, HashKV, CheckInvariants
//	describe.go  deterministic String methods for traces
//
// Where kvsm departs from etcd on purpose, the code says so at the spot
// (search for "etcd").
package kvsm

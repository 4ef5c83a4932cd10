// Package v2store gives etcd's v2 keys semantics (etcd 3.4's /v2/keys:
// directories, files, TTLs, compare-and-swap, in-order keys, waits) on top
// of the v3 keyspace, as a translation: every v2 request becomes v3 reads,
// a lease grant when it has a TTL, and one v3 Txn that makes its change
// atomically. There is no second state machine; the v2 tree is a set of v3
// keys under Prefix, replicated, snapshotted and compacted with the rest.
//
// # Layout
//
// A node /a/b is the v3 key Prefix+"/a/b"; its value is a record (kind
// file or directory, the v2 created index when it differs from the v3
// create revision, the expiration time, the value). Directories are keys
// of their own, so an empty directory exists. A TTL is a v3 lease granted
// for that node; the key goes with the lease, which the leader expires.
// Every v2 write also puts the journal key (Prefix itself) with the v2
// action and path, in the same Txn, so that a watcher can tell a set from
// a create, a compare-and-delete from a delete, and a whole recursive
// delete (one v2 event) from the many v3 deletes it is made of. A
// revision that deletes v2 keys without a journal entry is a lease expiry.
//
// The v2 index is the v3 revision: X-Etcd-Index, createdIndex and
// modifiedIndex are revisions, waitIndex starts a v3 watch, and a
// waitIndex below the compacted revision is etcd's "event index cleared".
//
// # Running a request
//
// An Op is a step function: Start gives the first v3 request, Step takes
// its answer and gives the next one or the v2 result. Writes read the
// nodes they depend on, decide as etcd's v2 store would, and commit with
// a Txn whose compares say that nothing they read has changed; when one
// has, the Op reads again (optimistic concurrency, bounded by
// writeAttemptsMax). The HTTP handler in server/v2 drives Ops against a
// member or a cluster; the simulator drives them against simulated members.
//
// # Where it differs from etcd 3.4's v2 store
//
//   - The v2 index is the v3 revision, so v3 writes advance it too, and an
//     in-order key is named by its read's index plus one, which is below
//     its created index when another write lands in between (names still
//     grow in creation order).
//   - A TTL is a lease, which the member raises to its minimum (1.5
//     election timeouts, rounded up): a 1 s TTL lives about 2 s by
//     default. Expiration and ttl are reported from the wall clock of the
//     member that answers; a wait reports the ttl left when it delivers.
//   - A node with a TTL of its own inside a directory with a TTL outlives
//     the directory's expiry (it goes with its own lease); reads walk the
//     ancestors, so it is not seen meanwhile.
//
// v2store is deterministic (time is handed in), since the simulator runs
// it: the determinism lint (determinism_test.go) covers it as it covers
// kvsm and sim. It may import the standard library (no os, net, sync or
// wall clock) and the etcd API protos.
package v2store

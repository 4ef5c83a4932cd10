// Package linearizability checks what a noded cluster did against what it
// must do: a porcupine model of the etcd KV API with revisions, the watch
// guarantees, lease safety and durability of acknowledged writes. It knows
// nothing of how the cluster is built; it reads histories.
//
// linearizability is deterministic. It may import the standard library
// except os, net, sync, math/rand and crypto/rand (time only for the
// time.Duration that bounds porcupine's search, never the clock),
// github.com/anishathalye/porcupine, go.etcd.io/etcd/api/v3 and
// google.golang.org/protobuf. It imports no other noded package: a checker
// stays outside the code it checks.
//
// # What is checked
//
// Check runs these checkers over one Input and reports every violation as a
// Failure naming the checker, the client, the operation and what was
// expected against what was observed:
//
//   - kv-linearizability: porcupine over the KV history with a model of
//     etcd's KV API (revisions, ranges with every option, txns with nested
//     txns, compaction, leases). Operations whose outcome the client never
//     learned are resolved through the committed log, as etcd's robustness
//     suite patches its history from the WAL.
//   - durability: every acknowledged write is in the committed log exactly
//     once, under the request the client sent, and replaying the log gives
//     the response the client saw (so the revision in its header is the one
//     it was applied at). Requests refused before raft are never committed.
//   - replay-reads: serializable reads and reads at a past revision equal
//     the replayed state at their revision.
//   - watch-*: ordered, unique, atomic, reliable, resumable, bookmarkable,
//     filters, prev_kv, IsCreate and compaction cancellation, each watcher
//     against the replayed events.
//   - lease-expiry and lease-revoke: no leader proposes an expiry early by
//     its own clock; no key outlives its lease's revoke; no write attaches a
//     dead lease.
//
// # Response errors
//
// Response.Err is read as one of three kinds (see errorKind):
//
//   - applied with no effect, decided by the state at the moment it applied:
//     Compacted and FutureRev (Compact, ranges at a revision, txns holding
//     them), LeaseNotFound (Put, Txn, LeaseRevoke), KeyNotFound (ignore_value
//     or ignore_lease on a missing key), LeaseExist and LeaseTTLTooLarge
//     (LeaseGrant). The model checks the condition held at the operation's
//     linearization point and leaves the state alone.
//   - never happened, refused by validation before raft: EmptyKey,
//     ValueProvided, LeaseProvided, TooManyOps, DuplicateKey,
//     InvalidSortOption, RequestTooLarge (and KeyNotFound for a txn holding
//     an empty RequestOp). The request must indeed be invalid, and must not
//     be in the committed log.
//   - indeterminate: every other error (timeouts, NoLeader, LeaderChanged,
//     Stopped, Canceled, NoSpace, anything unrecognized). Such an operation is
//     treated exactly like one with Return == Unknown.
package linearizability

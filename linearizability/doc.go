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
//   - history: the input keeps the contract (one request per operation, a
//     response for every learned outcome, each client's operations one after
//     another, request IDs unique).
//   - kv-linearizability: porcupine over the KV history with a model of
//     etcd's KV API (revisions, ranges with every option, txns with nested
//     txns, compaction, leases). Serializable reads are left to
//     replay-reads; reads at a past revision have their error and header
//     checked here and their contents there.
//   - durability: every acknowledged write is in the committed log exactly
//     once, under the request the client sent, and replaying the log gives
//     the response the client saw (so the revision in its header is the one
//     it was applied at); requests refused before raft are not logged; a
//     request sent after another returned is logged after it.
//   - validation: a request refused by validation breaks the rule named, and
//     an accepted one breaks none.
//   - replay-reads: every successful read equals the replayed state as of
//     its header revision, past-revision ranges answered as of their
//     revision.
//   - watch-*: ordered, unique, atomic, reliable, resumable, bookmarkable,
//     filter, prevkv, iscreate, compaction, cancel, progress and header,
//     each watcher on its own against the replayed events (see watch.go).
//   - lease-expiry and lease-revoke: no leader proposes an expiry early by
//     its own clock; no key outlives its lease's revoke; no write attaches a
//     dead lease.
//
// # Unknown outcomes and the committed log
//
// An operation whose outcome the client never learned (Return == Unknown,
// or an indeterminate error) is resolved through Input.Committed, as etcd's
// robustness suite patches its history from the WAL: a write not in the log
// never happened and is dropped; a write in the log happened, and porcupine
// must place it where the log did (the revision before and after it, and
// its error, are pinned to the replay's). Committed entries no client claims
// (lease expiry, compaction by the cluster) are placed the same way. Writes
// with a learned response that are in the log are pinned to their entry too.
// Before porcupine runs, every interval is narrowed by the revision order
// its response implies (tightenByRevision); this removes no valid
// linearization and keeps the search linear under load. The intervals in
// VisualizeKV's picture are the narrowed ones, with times replaced by their
// rank.
//
// # Response errors
//
// Response.Err is read as one of three kinds (see errorKind). Errors are
// matched by their description, so the rpctypes ErrGRPC* values and their
// client-side rpctypes.Err* twins both work.
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

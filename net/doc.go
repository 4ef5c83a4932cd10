// Package net carries raft messages between members. Two halves stand side
// by side: the production TCP transport (one stream per peer pair,
// length-prefixed protobuf frames, reconnect with backoff, snapshots in
// chunks, bounded queues) and SimNetwork, the simulated twin that package sim
// drives on virtual time (latency, loss, duplication, reordering, partitions,
// asymmetric links).
//
// net may import the standard library, go.etcd.io/raft/v3/raftpb and
// google.golang.org/protobuf. It imports no other noded package but
// internal/raftwire (the log entry decoder disk and net share) (its tests
// take certificates from server/tlsconfig/testpki). The twin's
// files (sim*.go) are deterministic like package sim and are held to the same
// lint (determinism_test.go at the root).
//
// A member sends and receives several raft messages per client request, so
// the stream's per-message path is kept lean: a message is framed into the
// writer's reused buffer without allocating, and decoded by decode.go in a
// few allocations (the shapes members send; anything else by
// proto.Unmarshal).
package net

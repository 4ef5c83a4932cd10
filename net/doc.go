// Package net carries raft messages between members. Two halves stand side
// by side: the production TCP transport (one stream per peer pair,
// length-prefixed protobuf frames, reconnect with backoff, snapshots in
// chunks, bounded queues) and SimNetwork, the simulated twin that package sim
// drives on virtual time (latency, loss, duplication, reordering, partitions,
// asymmetric links).
//
// net may import the standard library, go.etcd.io/raft/v3/raftpb and
// google.golang.org/protobuf. It imports no other noded package (its tests
// take certificates from server/tlsconfig/testpki). The twin's
// files (sim*.go) are deterministic like package sim and are held to the same
// lint (determinism_test.go at the root).
package net

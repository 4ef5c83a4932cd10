// Package disk is where a member's raft log, hard state and snapshots live:
// a write-ahead log of CRC-checked records in segment files and a directory of
// snapshot files, both written against a narrow FS interface.
//
// Two FS implementations stand side by side: OSFS, over the operating
// system's files, and SimFS, an in-memory twin that knows which bytes were
// synced and, on a simulated crash, keeps only those (or a torn prefix of the
// rest). Everything above the FS interface is written once for both; only
// OSFS touches the operating system. The twin's files (sim*.go) are
// deterministic and held to the lint in determinism_test.go at the root.
//
// disk may import the standard library, go.etcd.io/raft/v3/raftpb and
// google.golang.org/protobuf. It imports no other noded package.
package disk

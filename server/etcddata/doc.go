// Package etcddata moves a member's data between noded and etcd, in both
// directions:
//
//   - Restore lays out a new member's data directory from a snapshot file
//     (etcd 3.4 to 3.7's, or noded's), as `etcdutl snapshot restore` does
//     for etcd (`noded snapshot restore`).
//   - Prepare, run by the server before it opens a data directory, finds an
//     etcd member's data directory (member/snap/db, member/wal) and
//     converts it in place into noded's files beside etcd's, which stay
//     untouched, so that `noded` started with etcd's flags on a stopped etcd
//     member's directory continues that member: same member and cluster
//     IDs, every key, revision, lease and member, and the raft log after
//     the state etcd applied.
//   - WriteSnapshotDB writes a member's applied state as etcd's database,
//     for the Maintenance Snapshot stream.
//
// Both writes into a data directory go through disk.CreateFromSnapshot, so
// a crash at any step leaves either what was there before or the whole of
// the new state, never a directory a member would start from with part of
// the data. Everything is read and checked before anything is written: bad
// input is refused with nothing written.
//
// etcddata may import the standard library, go.uber.org/zap,
// go.etcd.io/raft/v3/raftpb, google.golang.org/protobuf and noded's disk,
// disk/etcdformat, kvsm and node.
package etcddata

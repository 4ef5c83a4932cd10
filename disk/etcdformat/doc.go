// Package etcdformat reads and writes etcd's files: the bbolt database of
// an etcd member (member/snap/db), the snapshot files etcdctl and etcdutl
// save (that database followed by a sha256 trailer), and etcd's write-ahead
// log (member/wal). It is how noded's state moves to and from etcd.
//
// The database is read and written through go.etcd.io/bbolt, the library
// etcd uses; this package is the only importer of bbolt in noded. The
// layout is etcd's (v3.4 to v3.7): buckets key, meta, lease, alarm,
// cluster, members, members_removed, auth, authUsers and authRoles; key
// bucket entries keyed by revision (8 bytes main, '_', 8 bytes sub, 't'
// for a tombstone) holding a marshalled mvccpb.KeyValue; leases as
// leasepb.Lease; members as etcd's JSON; the consistent index, term,
// conf state, compaction marks and storage version in meta.
//
// etcd's WAL is read by a reader of its own over etcd's record format
// (wal.go) rather than by go.etcd.io/etcd/server/v3's wal package: the
// format is small and has not changed since etcd 3.0, the reader works over
// disk.FS (so the fuzzer and the simulated disk reach it), and the server
// module would bring its whole dependency tree (prometheus, otel, ...) into
// noded for one package that also insists on real directories.
//
// Bytes from outside (snapshot files, WAL files) are untrusted: every
// decoder returns an error, never panics, and a bbolt panic or memory
// fault on a damaged database becomes an error too. bbolt trusts a file's
// page tree and loops forever on one that loops (fuzzing found it in a
// thousand random byte changes), so pages.go checks the tree's shape
// (page headers and branch pointers, read only) before bbolt walks it.
//
// It hands what it reads to a Sink, revision by revision, and writes what
// a Source yields: building noded's state from it, and the other way, is
// server/etcddata's job. Its tests use kvsm as the state on either side.
//
// etcdformat may import the standard library, go.etcd.io/bbolt,
// go.etcd.io/etcd/api/v3, go.etcd.io/raft/v3/raftpb,
// google.golang.org/protobuf, and of noded's packages disk (for FS).
package etcdformat

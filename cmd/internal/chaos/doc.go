// Package chaos runs real-process fault campaigns against noded: a cluster
// of 3 or 5 real member processes on loopback, driven by
// go.etcd.io/etcd/client/v3 clients whose every operation is recorded with
// wall-clock bounds, while faults from a seeded schedule hit the members:
// kill -9 (of any member and of the leader), SIGSTOP/SIGCONT pauses longer
// than the election timeout, network partitions between members (one-way,
// leader isolation, majority/minority splits) through a fault proxy on
// loopback, a full disk (a small tmpfs), lost unsynced writes (a FUSE layer
// that drops what was never fsynced when a member crashes), member
// replacement (remove, wipe, add back) and leader transfer under load.
//
// After the faults the cluster is healed and must converge; the members are
// stopped and their WALs read (disk.ReadLog) to rebuild the committed log,
// which is the ground truth package linearizability reads. The history, the
// watches, the answered keepalives and that log go through the same
// checkers as the simulator's, after linearizability.ResolveExternal has
// matched each write to its log entry by content and bounded each entry's
// apply time from above by what the clients observed.
//
// Unlike package sim, nothing here is deterministic: one seed fixes the
// cluster's shape, the workload's choices and the fault schedule, not the
// interleaving the operating system picks. A seed replays its schedule, not
// its history. So it is never run under sim, and it may use goroutines,
// clocks, processes, sockets and mounts.
//
// chaos may import the standard library, noded's disk, node (for planted
// bug names and limits) and linearizability packages,
// cmd/internal/memberproc, go.etcd.io/etcd/api/v3,
// go.etcd.io/etcd/client/v3, go.etcd.io/raft/v3/raftpb,
// google.golang.org/protobuf, go.uber.org/zap and
// github.com/hanwen/go-fuse/v2.
package chaos

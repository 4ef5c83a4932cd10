// Package sim runs whole noded clusters on virtual time in one thread: one
// seed expands into every knob of a run (cluster size, timings, workload,
// which faults are on), the members are the real node code over the disk
// package's SimFS and a simulated network, and every history is checked by
// package linearizability.
//
// sim is deterministic. It may import node, kvsm, disk, linearizability,
// the standard library except os, net, sync, time and math/rand (math/rand/v2
// only through explicitly seeded generators), go.etcd.io/raft/v3 and
// go.etcd.io/etcd/api/v3. The one exception is entropy.go, which points
// crypto/rand.Reader at the run's seeded stream because go.etcd.io/raft
// draws its election jitter from it.
package sim

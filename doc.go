// Package noded is the root of noded, a distributed, strongly consistent
// key-value store that speaks the etcd v3 API on the wire.
//
// The root package holds no code of its own: it carries the project-wide
// tests that read the source tree, the determinism lint among them
// (determinism_test.go). The packages below it are:
//
//	kvsm             the MVCC state machine every member applies committed entries to
//	node             one member: raft.RawNode, kvsm, leases, reads, membership; a step function
//	disk             write-ahead log and snapshot files, over a narrow FS with a simulated twin
//	net              peer transport over TCP, with a simulated network twin
//	sim              the seeded, single-threaded cluster simulator
//	linearizability  the checkers: porcupine KV model, watch, lease and durability validators
//	server           the production wiring: goroutines, TCP peers, files, gRPC and HTTP
//	cmd              noded (the daemon), nodesim (simulation campaigns), nodebench
//	fuzz             fuzz targets for every decoder of bytes from outside
//
// kvsm, node, sim and linearizability are deterministic: no goroutines,
// channels, select, sync, wall clock, os, net, global randomness, or map
// iteration order reaching an output. determinism_test.go enforces it.
package noded

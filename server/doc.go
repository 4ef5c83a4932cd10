// Package server runs a node for real: one goroutine owns the member, peers
// talk over package net's TCP transport, the log and snapshots live in files
// through package disk, and clients reach it through etcd v3's gRPC services
// and the /v3 JSON gateway, with /health, /readyz, /livez, /version and
// /metrics beside them.
//
// # The member loop
//
// node.Node is a step function and not safe for concurrent use, so exactly
// one goroutine (Member.run) calls it. Every round it takes one event, then
// whatever else is already waiting (up to eventsPerRoundMax), from bounded
// channels: client requests with their reply channels, raft messages from
// the transport, peer reports, watch stream requests, disk completions and
// a tick every --heartbeat-interval, spaced from when the previous one was
// handled (a lease's TTL is counted in ticks, and must not run short after a
// late one). Then it asks the node for Effects
// and carries them out in the node's order:
//
//  1. Persist goes to the disk goroutine (runDisk), which appends and, for
//     a write the node waits on, fsyncs and reports Persisted. The loop does
//     not wait: proposals that arrive meanwhile sit in raft's log and go to
//     disk together with the next write (group commit).
//  2. Messages go to the transport; Results to the waiting gRPC goroutines;
//     watch replies to their streams' bounded queues; SaveSnapshot to the
//     disk goroutine behind the writes before it.
//
// An fsync error stops the member: what depends on the write is never
// acknowledged. A member that learns it was removed (by applying its
// removal, or from a peer refusing it) stops too.
//
// The loop publishes a memberState after every round (leader, indexes,
// members, alarms) for goroutines that must not touch the node: health,
// metrics, forwarding, the transport's peer list.
//
// # Files
//
//	config.go     Config, etcd's defaults and validation, --initial-cluster
//	member.go     Start/Stop, the loop, the disk goroutine, the peer handler
//	services.go   KV, Lease, Cluster and Maintenance gRPC services; forwarding to the leader
//	auth_service.go  the Auth service; who a call comes from (server/auth holds tokens and passwords)
//	watch.go      Watch streams: routing, pacing requests, pausing slow readers, fragments
//	listen.go     one client port for gRPC and HTTP (routed by connmux)
//	ports.go      each port's connmux: TLS, connection limits, logs of refused connections
//	tls.go        the client and peer sides' TLS sources (package tlsconfig)
//	identity.go   what gRPC handlers learn of a client's TLS: ClientCertCN
//	peer.go       the peer port: transport and GET /members for joining members
//	http.go       /health, /readyz, /livez, /version, the /v3 gateway; mounts package v2 (/v2/*)
//	v2local.go    what the v2 API asks of the member: raft index, /v2/stats/self and /v2/stats/leader
//	metrics.go    /metrics: etcd's metric names through prometheus/client_golang
//	logging.go    the log lines scripts wait on, in etcd's wording
//	compactor.go  periodic and revision auto compaction
//	bootstrap.go  what cmd/noded asks before a start: an initialized data directory, the member's ID
//	recoverylog.go  the warnings for what opening the data directory repaired or set aside
//	corrupt.go    corruption checks (package corruptcheck) wired to the member: hashes, peers, the CORRUPT alarm
//	memory.go     memory given back: garbage returned to the system when idle, the collector off while loading
//
// Capabilities in packages of their own, wired here: coordination (the
// Lock and Election services), corruptcheck (hash comparisons between
// members), v2 (the v2 HTTP API over v2/v2store), discovery and proxy
// (used by cmd/noded before and instead of a member).
//
// Packages beside server: connmux (one port for several servers, TLS
// termination, connection limits), tlsconfig (etcd's TLS settings as
// *tls.Config, with file reloads and auto TLS), features (--feature-gates).
//
// server may import any noded package and any module in go.mod.
package server

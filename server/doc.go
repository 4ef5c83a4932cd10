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
// a time.Ticker at --heartbeat-interval. Then it asks the node for Effects
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
//	services.go   KV, Lease, Cluster, Maintenance and Auth gRPC services; forwarding to the leader
//	watch.go      Watch streams: routing, pausing slow readers, fragments
//	listen.go     one client port for gRPC and HTTP (connection sniffing)
//	peer.go       the peer port: transport and GET /members for joining members
//	http.go       /health, /readyz, /livez, /version, the /v3 gateway; mounts package v2 (/v2/*)
//	v2local.go    what the v2 API asks of the member: raft index, /v2/stats/self and /v2/stats/leader
//	metrics.go    /metrics in Prometheus text format
//	compactor.go  periodic and revision auto compaction
//	bootstrap.go  what cmd/noded asks before a start: an initialized data directory, the member's ID
//
// server may import any noded package and any module in go.mod.
package server

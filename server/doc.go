// Package server runs a node for real: one goroutine owns the member, peers
// talk over package net's TCP transport, the log and snapshots live in files
// through package disk, and clients reach it through etcd v3's gRPC services
// and the /v3 JSON gateway, with /health, /readyz, /livez, /version and
// /metrics beside them.
//
// server may import any noded package and any module in go.mod.
package server

// Package fuzz holds go fuzz targets for every decoder of bytes that come
// from outside a member: WAL records and directories, snapshots, peer frames
// and client requests. Seed corpora live in testdata/fuzz beside each target.
package fuzz

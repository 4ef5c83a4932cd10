package etcdformat

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/noded/noded/kvsm"
)

// benchKeys is how many keys the benchmarks' state holds
// (NODED_BENCH_KEYS; default 100000).
func benchKeys() int {
	if n, err := strconv.Atoi(os.Getenv("NODED_BENCH_KEYS")); err == nil && n > 0 {
		return n
	}
	return 100000
}

// benchStore holds n keys of 100-byte values, written in txns of 128 as a
// load would, then each of a tenth of them overwritten.
func benchStore(n int) *kvsm.Store {
	s := kvsm.New(kvsm.Config{})
	value := make([]byte, 100)
	for i := 0; i < n; i += 128 {
		var ops []*pb.RequestOp
		for k := i; k < min(n, i+128); k++ {
			ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(fmt.Sprintf("snapshot/%010d", k)), Value: value}}})
		}
		s.Apply(&pb.InternalRaftRequest{Txn: &pb.TxnRequest{Success: ops}})
	}
	for k := 0; k < n; k += 10 {
		s.Apply(&pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(fmt.Sprintf("snapshot/%010d", k)), Value: value}})
	}
	return s
}

// BenchmarkWriteDB writes a state as etcd's database (what the Snapshot
// stream sends).
func BenchmarkWriteDB(b *testing.B) {
	s := benchStore(benchKeys())
	dir := b.TempDir()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		path := filepath.Join(dir, fmt.Sprint("db", i))
		if err := WriteDB(path, storeSource(s)); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if fi, err := os.Stat(path); err == nil {
			b.SetBytes(fi.Size())
		}
		os.Remove(path)
		b.StartTimer()
	}
	b.ReportMetric(float64(benchKeys())*float64(b.N)/b.Elapsed().Seconds(), "keys/s")
}

// BenchmarkReadSnapshot reads a snapshot file back into a store (what a
// restore does before it writes).
func BenchmarkReadSnapshot(b *testing.B) {
	s := benchStore(benchKeys())
	path := filepath.Join(b.TempDir(), "snap")
	if err := WriteSnapshotFile(path, storeSource(s)); err != nil {
		b.Fatal(err)
	}
	fi, _ := os.Stat(path)
	b.SetBytes(fi.Size())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := readStore(path, ReadOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(benchKeys())*float64(b.N)/b.Elapsed().Seconds(), "keys/s")
}

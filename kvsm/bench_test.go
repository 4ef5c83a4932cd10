package kvsm

import (
	"fmt"
	"runtime"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Benchmarks. Stores are loaded once per size and shared by the benchmarks
// of that size (Put and Txn add history to them as they run). Keys are 16
// bytes, "%05d/%010d": every 1,000 consecutive keys share a 6-byte prefix.
// Run for instance:
//
//	go test ./kvsm/ -run '^$' -bench . -benchtime 20000x
//	go test ./kvsm/ -run '^$' -bench LoadMemory -benchtime 1x

const benchValueBytes = 256

var benchStores = map[int]*Store{}

func benchKey(i int) []byte { return fmt.Appendf(nil, "%05d/%010d", i/1000, i%1000) }

func benchStore(b *testing.B, n int) *Store {
	if s, ok := benchStores[n]; ok {
		return s
	}
	b.Helper()
	s := loadStore(n)
	benchStores[n] = s
	return s
}

// loadStore puts n keys of benchValueBytes each, one revision per key.
func loadStore(n int) *Store {
	s := New(Config{})
	value := make([]byte, benchValueBytes)
	req := &pb.InternalRaftRequest{Put: &pb.PutRequest{Value: value}}
	for i := range n {
		req.Put.Key = benchKey(i)
		if res := s.Apply(req); res.Err != nil {
			panic(res.Err)
		}
	}
	return s
}

var benchSizes = []struct {
	name string
	keys int
}{{"100k", 100_000}, {"1M", 1_000_000}}

func BenchmarkPut(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			s := benchStore(b, size.keys)
			value := make([]byte, benchValueBytes)
			req := &pb.InternalRaftRequest{Put: &pb.PutRequest{Value: value}}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				req.Put.Key = benchKey((i * 7919) % size.keys)
				if res := s.Apply(req); res.Err != nil {
					b.Fatal(res.Err)
				}
			}
		})
	}
}

func BenchmarkRangeOneKey(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			s := benchStore(b, size.keys)
			req := &pb.RangeRequest{}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				req.Key = benchKey((i * 7919) % size.keys)
				resp, err := s.Range(req)
				if err != nil || len(resp.Kvs) != 1 {
					b.Fatalf("range: %v", err)
				}
			}
		})
	}
}

func BenchmarkRangePrefix1000(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			s := benchStore(b, size.keys)
			groups := size.keys / 1000
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				prefix := fmt.Appendf(nil, "%05d/", (i*31)%groups)
				end := append([]byte(nil), prefix...)
				end[len(end)-1]++
				resp, err := s.Range(&pb.RangeRequest{Key: prefix, RangeEnd: end})
				if err != nil || len(resp.Kvs) != 1000 {
					b.Fatalf("prefix range: %d keys, %v", len(resp.Kvs), err)
				}
			}
		})
	}
}

// BenchmarkTxn is a compare-and-swap: if the key's mod revision is what it
// was, put a new value and read it back.
func BenchmarkTxn(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			s := benchStore(b, size.keys)
			value := make([]byte, benchValueBytes)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				key := benchKey((i * 7919) % size.keys)
				req := txnReq(&pb.TxnRequest{
					Compare: []*pb.Compare{{Key: key, Target: pb.Compare_MOD, Result: pb.Compare_LESS, TargetUnion: &pb.Compare_ModRevision{ModRevision: s.Rev() + 1}}},
					Success: []*pb.RequestOp{
						{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Value: value}}},
						{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: key}}},
					},
				})
				res := s.Apply(req)
				if res.Err != nil || !res.Resp.(*pb.TxnResponse).Succeeded {
					b.Fatalf("txn: %s", res)
				}
			}
		})
	}
}

// BenchmarkLoadMemory loads 1M keys (16-byte keys, 256-byte values) into a
// fresh store and reports the heap it holds per key beyond the 272 bytes of
// key and value: every index, entry and revision-log byte. Target: <= 250
// (etcd holds about 430).
func BenchmarkLoadMemory(b *testing.B) {
	const keys = 1_000_000
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		s := loadStore(keys)
		runtime.GC()
		runtime.ReadMemStats(&after)
		perKey := float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / keys
		b.ReportMetric(perKey-16-benchValueBytes, "overhead-bytes/key")
		b.ReportMetric(perKey, "heap-bytes/key")
		runtime.KeepAlive(s)
	}
}

package disk

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Benchmarks run on OSFS in a temporary directory. BenchmarkRawFsync is the
// yardstick: a block appended to a file and fsynced, 512 bytes (the least a
// durable append can cost) and 1 MiB (what the device needs for the bytes
// of the largest batch). BenchmarkAppendSync appends a batch of records and
// syncs once (group commit). Its x-raw-fsync metric is its time per batch
// over the time of a bare 512-byte append+fsync timed right after every
// batch on the same file system (untimed for ns/op): pairing the samples
// keeps the ratio honest on a machine whose disk is shared and whose fsync
// time drifts.

func BenchmarkRawFsync(b *testing.B) {
	for _, blockSizeBytes := range []int{512, 1 << 20} {
		b.Run(fmt.Sprintf("block=%dB", blockSizeBytes), func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			block := make([]byte, blockSizeBytes)
			b.ResetTimer()
			for range b.N {
				if _, err := f.Write(block); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fsyncs/s")
		})
	}
}

const rawBlockSizeBytes = 512

func BenchmarkAppendSync(b *testing.B) {
	for _, recordSizeBytes := range []int{256, 4096} {
		for _, batch := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("record=%dB/batch=%d", recordSizeBytes, batch), func(b *testing.B) {
				benchmarkAppendSync(b, recordSizeBytes, batch)
			})
		}
	}
}

func benchmarkAppendSync(b *testing.B, recordSizeBytes, batch int) {
	dir := b.TempDir()
	s, err := Create(NewOSFS(dir), "wal", "snap", []byte("bench"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	side, err := os.Create(filepath.Join(dir, "raw"))
	if err != nil {
		b.Fatal(err)
	}
	defer side.Close()
	block := make([]byte, rawBlockSizeBytes)
	rng := rand.New(rand.NewPCG(1, 2))
	payload := make([]byte, recordSizeBytes)
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	es := make([]*raftpb.Entry, batch)
	for i := range es {
		es[i] = &raftpb.Entry{Term: proto.Uint64(1), Index: proto.Uint64(0), Data: payload}
	}
	hs := hardState(1, 1, 0)
	next := uint64(1)
	var rawFsyncTotal time.Duration
	b.ResetTimer()
	for range b.N {
		for _, e := range es {
			*e.Index = next
			next++
		}
		*hs.Commit = next - 1
		if err := s.Append(hs, es); err != nil {
			b.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		rawStart := time.Now()
		if _, err := side.Write(block); err != nil {
			b.Fatal(err)
		}
		if err := side.Sync(); err != nil {
			b.Fatal(err)
		}
		rawFsyncTotal += time.Since(rawStart)
		b.StartTimer()
	}
	elapsed := b.Elapsed().Seconds()
	records := float64(b.N * batch)
	b.ReportMetric(records/elapsed, "records/s")
	b.ReportMetric(records*float64(recordSizeBytes)/elapsed/1e6, "MB/s")
	b.ReportMetric(elapsed/rawFsyncTotal.Seconds(), "x-raw-fsync")
}

package disk

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Benchmarks run on OSFS in a temporary directory. BenchmarkRawFsync is the
// yardstick: one small block appended and fsynced, the least any durable
// append can cost. BenchmarkAppendSync appends a batch of records and syncs
// once (group commit); its fsync-ratio metric divides its time per batch by
// a raw fsync measured in the same process on the same file system, so the
// target (a batch of 256 under 1.5x one bare fsync) reads off directly.

const rawBlockSizeBytes = 512

func BenchmarkRawFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, rawBlockSizeBytes)
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
}

var (
	rawFsyncOnce sync.Once
	rawFsyncTime time.Duration
)

// rawFsyncDuration measures one append-and-fsync of a small block, as
// BenchmarkRawFsync does, once per process.
func rawFsyncDuration(b *testing.B) time.Duration {
	rawFsyncOnce.Do(func() {
		dir, err := os.MkdirTemp("", "noded-rawfsync")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
		f, err := os.Create(filepath.Join(dir, "raw"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		block := make([]byte, rawBlockSizeBytes)
		const calibrationFsyncs = 200
		start := time.Now()
		for range calibrationFsyncs {
			f.Write(block)
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		rawFsyncTime = time.Since(start) / calibrationFsyncs
	})
	return rawFsyncTime
}

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
	raw := rawFsyncDuration(b)
	s, err := Create(NewOSFS(b.TempDir()), "wal", "snap", []byte("bench"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
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
	b.ResetTimer()
	for range b.N {
		for _, e := range es {
			e.Index = proto.Uint64(next)
			next++
		}
		hs.Commit = proto.Uint64(next - 1)
		if err := s.Append(hs, es); err != nil {
			b.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := b.Elapsed().Seconds()
	records := float64(b.N * batch)
	b.ReportMetric(records/elapsed, "records/s")
	b.ReportMetric(records*float64(recordSizeBytes)/elapsed/1e6, "MB/s")
	b.ReportMetric(elapsed/float64(b.N)/raw.Seconds(), "fsync-ratio")
}

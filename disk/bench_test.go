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

// Benchmarks run on OSFS in a temporary directory, each in two ways side by
// side in the same run: "growing" is how this package wrote segments before
// they were preallocated (each write grows the file, Sync is fsync), and
// "preallocated" is how it writes them now (writes land inside space
// Allocate reserved, Sync is fdatasync on Linux).
//
// BenchmarkRawFsync is the yardstick: a block written and synced, 512 bytes
// (the least a durable append can cost) and 1 MiB (what the device needs
// for the bytes of the largest batch). BenchmarkAppendSync appends a batch
// of records and syncs once (group commit). Its x-raw-fsync metric is its
// time per batch over the time of a bare 512-byte append+fsync to a growing
// file, timed right after every batch on the same file system (untimed for
// ns/op): pairing the samples keeps the ratio honest on a machine whose
// disk is shared and whose fsync time drifts, and makes the two ways'
// ratios comparable with each other.

// growingFS is OSFS as this package used it before segments were
// preallocated: Allocate does nothing, so files grow with each write, and
// Sync is fsync.
type growingFS struct{ FS }

type growingFile struct{ *osFile }

func (g growingFS) Create(name string) (File, error)     { return growingHandle(g.FS.Create(name)) }
func (g growingFS) OpenAppend(name string) (File, error) { return growingHandle(g.FS.OpenAppend(name)) }

func growingHandle(f File, err error) (File, error) {
	if err != nil {
		return nil, err
	}
	return growingFile{f.(*osFile)}, nil
}

func (f growingFile) Allocate(int64) error { return nil }
func (f growingFile) Sync() error          { return f.f.Sync() }

// walWays are the two ways of writing segments the benchmarks compare.
var walWays = []struct {
	name   string
	wrapFS func(FS) FS
}{
	{"growing+fsync", func(fsys FS) FS { return growingFS{fsys} }},
	{"preallocated+fdatasync", func(fsys FS) FS { return fsys }},
}

func BenchmarkRawFsync(b *testing.B) {
	for _, blockSizeBytes := range []int{512, 1 << 20} {
		for _, way := range walWays {
			b.Run(fmt.Sprintf("block=%dB/%s", blockSizeBytes, way.name), func(b *testing.B) {
				fsys := way.wrapFS(NewOSFS(b.TempDir()))
				f, err := fsys.Create("raw")
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				if err := f.Allocate(int64(b.N) * int64(blockSizeBytes)); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				block := make([]byte, blockSizeBytes)
				b.ResetTimer()
				for i := range b.N {
					if _, err := f.WriteAt(block, int64(i)*int64(blockSizeBytes)); err != nil {
						b.Fatal(err)
					}
					if err := f.Sync(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "syncs/s")
			})
		}
	}
}

const rawBlockSizeBytes = 512

func BenchmarkAppendSync(b *testing.B) {
	for _, recordSizeBytes := range []int{256, 4096} {
		for _, batch := range []int{1, 16, 256} {
			for _, way := range walWays {
				b.Run(fmt.Sprintf("record=%dB/batch=%d/%s", recordSizeBytes, batch, way.name), func(b *testing.B) {
					benchmarkAppendSync(b, way.wrapFS, recordSizeBytes, batch)
				})
			}
		}
	}
}

func benchmarkAppendSync(b *testing.B, wrapFS func(FS) FS, recordSizeBytes, batch int) {
	dir := b.TempDir()
	s, err := Create(wrapFS(NewOSFS(dir)), "wal", "snap", []byte("bench"), Options{})
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

// BenchmarkOpenPreallocated is what a restart pays to read a newest segment
// that is mostly allocated zeros: Open reads and checks the whole 64 MiB
// (the zeros after the data must be zeros), then syncs.
func BenchmarkOpenPreallocated(b *testing.B) {
	fsys := NewOSFS(b.TempDir())
	s, err := Create(fsys, "wal", "snap", []byte("bench"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Append(hardState(1, 1, 100), ents(1, 100, 1)); err != nil {
		b.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		s, rec, err := Open(fsys, "wal", "snap", Options{})
		if err != nil {
			b.Fatal(err)
		}
		if len(rec.Entries) != 100 {
			b.Fatalf("recovered %d entries", len(rec.Entries))
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

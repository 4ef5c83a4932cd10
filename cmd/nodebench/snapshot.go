package main

// The snapshot rows (-snapshot-keys N): each side is loaded with N keys,
// then, in alternating rounds, its Maintenance Snapshot stream is saved to
// a file (as `etcdctl snapshot save` does) and the file restored into a
// new data directory with the side's own tool (`etcdutl snapshot restore`
// for etcd, `noded snapshot restore` for noded). Times are medians over
// the rounds.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// snapshotLoadTxnOps is how many puts one load transaction carries (etcd's
// default --max-txn-ops).
const snapshotLoadTxnOps = 128

// snapshotTimeout bounds one save.
const snapshotTimeout = 30 * time.Minute

type snapshotSample struct {
	save, restore []time.Duration
	sizeBytes     int64
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// loadKeys puts n keys of valueSize bytes into s, in transactions of
// snapshotLoadTxnOps puts from its connections at once.
func loadKeys(s *side, n, valueSize int) error {
	value := strings.Repeat("v", valueSize)
	txns := (n + snapshotLoadTxnOps - 1) / snapshotLoadTxnOps
	next := make(chan int, len(s.conns))
	errs := make(chan error, len(s.conns))
	var wg sync.WaitGroup
	for _, cli := range s.conns {
		wg.Add(1)
		go func(cli *clientv3.Client) {
			defer wg.Done()
			for t := range next {
				var ops []clientv3.Op
				for k := t * snapshotLoadTxnOps; k < min(n, (t+1)*snapshotLoadTxnOps); k++ {
					ops = append(ops, clientv3.OpPut(fmt.Sprintf("snapshot/%010d", k), value))
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				_, err := cli.Txn(ctx).Then(ops...).Commit()
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		}(cli)
	}
	for t := 0; t < txns; t++ {
		select {
		case next <- t:
		case err := <-errs:
			close(next)
			wg.Wait()
			return err
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// saveSnapshot streams s's snapshot into path.
func saveSnapshot(s *side, path string) (time.Duration, int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
	defer cancel()
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.endpoints[:1], DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return 0, 0, err
	}
	defer cli.Close()
	start := time.Now()
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		return 0, 0, err
	}
	n, err := io.Copy(f, rc)
	rc.Close()
	if err != nil {
		return 0, 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, 0, err
	}
	return time.Since(start), n, nil
}

// restoreSnapshot runs tool's `snapshot restore` of path into a new
// directory under dir, and removes it after.
func restoreSnapshot(tool, path, dir string) (time.Duration, error) {
	out := filepath.Join(dir, "restored")
	os.RemoveAll(out)
	defer os.RemoveAll(out)
	cmd := exec.Command(tool, "snapshot", "restore", path, "--data-dir", out)
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("%s snapshot restore: %v\n%s", tool, err, b)
	}
	return time.Since(start), nil
}

// runSnapshotRows measures the snapshot rows; sides are etcd then noded.
func runSnapshotRows(o options, dir string, sides []*side, out io.Writer) error {
	tools := []string{o.etcdutl, sides[1].binary}
	if _, err := os.Stat(o.etcdutl); err != nil {
		return fmt.Errorf("-etcdutl %q: %w (etcd's restore tool; shared/tools/etcd-anchors.sh builds one)", o.etcdutl, err)
	}
	for _, s := range sides {
		progress("loading %d keys of %d bytes into %s", o.snapshotKeys, o.valueSizeBytes, s.label)
		start := time.Now()
		if err := loadKeys(s, o.snapshotKeys, o.valueSizeBytes); err != nil {
			return fmt.Errorf("load %s: %w", s.label, err)
		}
		progress("loaded %s in %v", s.label, time.Since(start).Round(time.Millisecond))
	}
	samples := make([]snapshotSample, len(sides))
	for round := 0; round < o.rounds; round++ {
		for k := range sides {
			i := k
			if round%2 == 1 {
				i = len(sides) - 1 - k
			}
			s := sides[i]
			path := filepath.Join(dir, s.label+".snapshot")
			progress("snapshot round %d/%d on %s: save", round+1, o.rounds, s.label)
			d, size, err := saveSnapshot(s, path)
			if err != nil {
				return fmt.Errorf("%s: save: %w", s.label, err)
			}
			samples[i].save = append(samples[i].save, d)
			samples[i].sizeBytes = size
			progress("snapshot round %d/%d on %s: restore (%d bytes)", round+1, o.rounds, s.label, size)
			d, err = restoreSnapshot(tools[i], path, dir)
			if err != nil {
				return fmt.Errorf("%s: %w", s.label, err)
			}
			samples[i].restore = append(samples[i].restore, d)
			os.Remove(path)
		}
	}
	for _, line := range describe(o, sides) {
		fmt.Fprintln(out, line)
	}
	fmt.Fprintf(out, "snapshot rows: %d keys of %d bytes, medians of %d alternating rounds; restore tools: %s, %s\n\n",
		o.snapshotKeys, o.valueSizeBytes, o.rounds, tools[0], tools[1])
	tw := tabwriter.NewWriter(out, 0, 0, 1, ' ', 0)
	tableRow(tw, []string{"operation", "etcd s", "noded s", "noded/etcd time", "etcd keys/s", "noded keys/s", "etcd MB", "noded MB"})
	tableRow(tw, []string{"---", "---", "---", "---", "---", "---", "---", "---"})
	for _, op := range []struct {
		name string
		get  func(*snapshotSample) time.Duration
	}{
		{"snapshot save (stream to a file)", func(s *snapshotSample) time.Duration { return median(s.save) }},
		{"snapshot restore (file to a data directory)", func(s *snapshotSample) time.Duration { return median(s.restore) }},
	} {
		e, n := op.get(&samples[0]), op.get(&samples[1])
		tableRow(tw, []string{op.name,
			fmt.Sprintf("%.2f", e.Seconds()), fmt.Sprintf("%.2f", n.Seconds()), ratio(n.Seconds(), e.Seconds()),
			fmt.Sprintf("%.0f", float64(o.snapshotKeys)/e.Seconds()), fmt.Sprintf("%.0f", float64(o.snapshotKeys)/n.Seconds()),
			fmt.Sprintf("%.1f", float64(samples[0].sizeBytes)/1e6), fmt.Sprintf("%.1f", float64(samples[1].sizeBytes)/1e6)})
	}
	return tw.Flush()
}

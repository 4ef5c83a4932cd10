package main

// Watch creations sent back to back on one stream (issue 17, item 3): a
// client that multiplexes many watches on one stream (an API server does)
// may send creates faster than it reads their replies. The member must
// pace the stream (stop reading it while replies wait) and serve every
// create, never cancel the stream.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// watchBurstCreates is the burst the issue names: etcd serves 100,000
// creates sent back to back on one stream.
const watchBurstCreates = 100000

// watchBurstResult is what one burst saw.
type watchBurstResult struct {
	created  int           // created replies for the burst's watchers
	took     time.Duration // from the first create sent to the last created reply
	sendDone time.Duration // when the last create had been handed to gRPC
	watchIDs map[string]int64
}

// watchBurst opens one watch stream on cli's connection and sends n creates
// (keys prefix/0 .. prefix/n-1) back to back from one goroutine while
// another reads the replies, starting only after readAfter (so the member
// sees a client that does not read for a while). It fails on any cancel
// or refusal and returns once every create is answered.
func watchBurst(ctx context.Context, cli *clientv3.Client, prefix string, n int, readAfter time.Duration) (watchBurstResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewWatchClient(cli.ActiveConnection()).Watch(ctx)
	if err != nil {
		return watchBurstResult{}, fmt.Errorf("open watch stream: %w", err)
	}
	res := watchBurstResult{watchIDs: make(map[string]int64, n)}
	began := time.Now()
	var sent atomic.Int64
	sendErr := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			req := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
				Key: []byte(prefix + strconv.Itoa(i)),
			}}}
			if err := stream.Send(req); err != nil {
				sendErr <- fmt.Errorf("send create %d: %w", i, err)
				return
			}
			sent.Add(1)
		}
		res.sendDone = time.Since(began)
		sendErr <- nil
	}()
	select {
	case <-time.After(readAfter):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	// Creates without a watch ID are answered in order, each with the ID the
	// member chose; the i-th created reply is key prefix/i's.
	for res.created < n {
		resp, err := stream.Recv()
		if err != nil {
			return res, fmt.Errorf("after %d of %d created replies (%d creates sent): %w", res.created, n, sent.Load(), err)
		}
		switch {
		case resp.GetCanceled():
			return res, fmt.Errorf("after %d of %d created replies: watch %d canceled: %q", res.created, n, resp.GetWatchId(), resp.GetCancelReason())
		case resp.GetCreated():
			res.watchIDs[prefix+strconv.Itoa(res.created)] = resp.GetWatchId()
			res.created++
		}
	}
	res.took = time.Since(began)
	if err := <-sendErr; err != nil {
		return res, err
	}
	// The watchers are live: a put to one of them arrives on its ID.
	key := prefix + strconv.Itoa(n-1)
	if _, err := cli.Put(ctx, key, "after-burst"); err != nil {
		return res, fmt.Errorf("put %s: %w", key, err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return res, fmt.Errorf("waiting for the event of %s: %w", key, err)
		}
		for _, ev := range resp.GetEvents() {
			if string(ev.GetKv().GetKey()) == key {
				if resp.GetWatchId() != res.watchIDs[key] {
					return res, fmt.Errorf("event of %s on watch %d, its watcher is %d", key, resp.GetWatchId(), res.watchIDs[key])
				}
				return res, stream.CloseSend()
			}
			return res, fmt.Errorf("unexpected event %s on watch %d", ev.GetKv().GetKey(), resp.GetWatchId())
		}
	}
}

// TestWatchCreateBurst sends 100,000 creates back to back on one stream
// while reading, then again with a client that reads nothing for a few
// seconds first: every create is served, the stream is never cancelled.
func TestWatchCreateBurst(t *testing.T) {
	c := newCluster(t, 1)
	cli := c.client(t)
	for _, tc := range []struct {
		name      string
		readAfter time.Duration
	}{
		{"reading", 0},
		{"reading-late", 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			res, err := watchBurst(ctx, cli, "burst-"+tc.name+"/", watchBurstCreates, tc.readAfter)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d creates back to back on one stream: all created in %v (sends done after %v)",
				res.created, res.took.Round(time.Millisecond), res.sendDone.Round(time.Millisecond))
		})
	}
}

// TestWatchersPerStreamFlag: --max-watchers-per-stream bounds one stream's
// watchers; the create past it is refused with a reason naming the flag,
// the stream goes on serving the watchers it has, and another stream
// starts afresh.
func TestWatchersPerStreamFlag(t *testing.T) {
	requireNoded(t, "--max-watchers-per-stream is noded's own flag")
	c := newCluster(t, 1, "--max-watchers-per-stream=5")
	cli := c.client(t)
	ctx := ctxTimeout(t)
	stream, err := pb.NewWatchClient(cli.ActiveConnection()).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("k" + strconv.Itoa(i))}}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 6; i++ {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if i < 5 && (!resp.GetCreated() || resp.GetCanceled()) {
			t.Fatalf("create %d: %v", i, resp)
		}
		if i == 5 && (!resp.GetCanceled() || !strings.Contains(resp.GetCancelReason(), "--max-watchers-per-stream") || resp.GetWatchId() != -1) {
			t.Fatalf("create past the bound: %v, want a refusal naming the flag", resp)
		}
	}
	if _, err := cli.Put(ctx, "k4", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil || len(resp.GetEvents()) != 1 || string(resp.GetEvents()[0].GetKv().GetKey()) != "k4" {
		t.Fatalf("after the refusal, the stream's watchers: %v %v", resp, err)
	}
	if _, err := watchBurst(ctx, cli, "other/", 5, 0); err != nil {
		t.Fatalf("another stream: %v", err)
	}
}

// requireNoded skips a test of a noded-only behaviour when the tests run
// against another binary (noded's --version says "Git SHA: noded").
func requireNoded(t *testing.T, why string) {
	t.Helper()
	requireE2E(t)
	out, err := exec.Command(e2eBinary, "--version").Output()
	if err != nil || !strings.Contains(string(out), "Git SHA: noded") {
		t.Skipf("%s is not noded: %s", e2eBinary, why)
	}
}

// etcd37Binary returns the etcd 3.7 binary the side-by-side benchmarks run
// against (NODED_ETCD37_BINARY), or skips: this machine's /usr/bin/etcd is
// 3.4, and the figures are quoted against 3.7.
func etcd37Binary(b testing.TB) string {
	path := os.Getenv("NODED_ETCD37_BINARY")
	if path == "" {
		b.Skip("set NODED_ETCD37_BINARY to an etcd 3.7 binary (bash /work/shared/tools/etcd-anchors.sh builds one) to compare against it")
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil || !strings.Contains(string(out), "etcd Version: 3.7.") {
		b.Fatalf("NODED_ETCD37_BINARY=%s is not etcd 3.7: %v %s", path, err, out)
	}
	return path
}

// BenchmarkWatchCreateBurst sends watchBurstCreates creates back to back on
// one stream to noded and to etcd 3.7, a fresh single member each, side by
// side in one run: each iteration runs both, in ABBA order across
// iterations so both see the same machine load. Each burst reads the
// replies as they come. It reports each side's creates per second and its
// resident memory per watcher held after the burst, and the noded/etcd
// ratios.
//
//	NODED_ETCD37_BINARY=/work/anchors/etcd go test ./cmd/noded -run '^$' -bench WatchCreateBurst -benchtime 4x
func BenchmarkWatchCreateBurst(b *testing.B) {
	etcd := etcd37Binary(b)
	type side struct {
		name, binary           string
		creates, seconds, rssB float64
	}
	sides := []*side{{name: "noded", binary: e2eBinary}, {name: "etcd", binary: etcd}}
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		order := []*side{sides[0], sides[1]}
		if i%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, sd := range order {
			c := newClusterOf(b, sd.binary, 1)
			m := c.members[0]
			cli := c.client(b)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			rssBefore := processRSSBytes(m.pid())
			b.StartTimer()
			res, err := watchBurst(ctx, cli, "bench/", watchBurstCreates, 0)
			b.StopTimer()
			cancel()
			if err != nil {
				b.Fatalf("%s: %v", sd.name, err)
			}
			sd.creates += float64(res.created)
			sd.seconds += res.took.Seconds()
			sd.rssB += float64(processRSSBytes(m.pid()) - rssBefore)
			m.kill(b)
		}
	}
	for _, sd := range sides {
		b.ReportMetric(sd.creates/sd.seconds, sd.name+"-creates/s")
		b.ReportMetric(sd.rssB/sd.creates, sd.name+"-RSS-B/watcher")
	}
	b.ReportMetric((sides[0].creates/sides[0].seconds)/(sides[1].creates/sides[1].seconds), "noded/etcd-creates/s")
	b.ReportMetric((sides[0].rssB/sides[0].creates)/(sides[1].rssB/sides[1].creates), "noded/etcd-RSS/watcher")
}

// processRSSBytes reads a process's resident set from /proc; 0 if unknown.
func processRSSBytes(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

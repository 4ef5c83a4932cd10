package sim

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/noded/noded/linearizability"
)

var (
	flagSeed   = flag.Uint64("sim.seed", 0, "run only this seed in TestSeeds")
	flagUpdate = flag.Bool("sim.update", false, "rewrite testdata/trace_hashes.txt")
)

// simGCPercent is the garbage collector's target for simulation runs
// unless GOGC says otherwise: a run allocates heavily and briefly, and
// collecting a quarter as often costs a few hundred megabytes and saves
// about a third of its CPU time.
const simGCPercent = 400

func TestMain(m *testing.M) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(simGCPercent)
	}
	os.Exit(m.Run())
}

// ciSeeds is the fixed set every CI run checks (about 300 s of CPU), with
// regressionSeeds. NODED_SIM_SEEDS=N widens
// (or narrows) it to seeds 1..N; NODED_SIM_SHARD=i/n runs every n-th seed
// starting at i, so that CI can spread the set over processes (runs of the
// simulator cannot overlap within one process).
const ciSeeds = 1000

// regressionSeeds are campaign seeds beyond the CI set that once failed;
// every run checks them too. 2418: a lease taken over by a new leader
// was not reported to the checker. 3165: a torn first write kept the
// bootstrap entry without its hard state, and the member never bootstrapped
// again. 5866: on a network whose one-way delay averaged 0.93 s a client
// timed out after 1.03 s, so a linearizable read never finished in time and
// the client retried until the liveness bound. 781, 1171, 1596: a new leader
// renewed a lease whose revoke, proposed by an earlier leader, was still
// in its log uncommitted, so the lease ended soon after a keepalive the
// client was told had renewed it.
var regressionSeeds = []uint64{781, 1171, 1596, 2418, 3165, 5866}

func seedsToRun(t *testing.T) []uint64 {
	if *flagSeed != 0 {
		return []uint64{*flagSeed}
	}
	n := ciSeeds
	if s := os.Getenv("NODED_SIM_SEEDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			t.Fatalf("NODED_SIM_SEEDS=%q: want a count", s)
		}
		n = v
	}
	shard, shards := 0, 1
	if s := os.Getenv("NODED_SIM_SHARD"); s != "" {
		a, b, ok := strings.Cut(s, "/")
		x, err1 := strconv.Atoi(a)
		y, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || y <= 0 || x < 0 || x >= y {
			t.Fatalf("NODED_SIM_SHARD=%q: want i/n", s)
		}
		shard, shards = x, y
	}
	var all []uint64
	for s := 1; s <= n; s++ {
		all = append(all, uint64(s))
	}
	for _, s := range regressionSeeds {
		if s > uint64(n) {
			all = append(all, s)
		}
	}
	var out []uint64
	for i, s := range all {
		if i%shards == shard {
			out = append(out, s)
		}
	}
	return out
}

// TestSeeds runs the CI seed set: every run must pass every checker, and a
// failure prints the one command that replays it and keeps its report.
func TestSeeds(t *testing.T) {
	if testing.Short() {
		t.Skip("runs whole simulated clusters")
	}
	start := time.Now()
	var virtual int64
	for _, seed := range seedsToRun(t) {
		rep := Run(Options{Seed: seed})
		virtual += rep.Stats.VirtualNs
		if !rep.OK {
			dir := keepReport(t, rep)
			t.Errorf("%s\nreport kept in %s\nreplay: go test ./sim -run 'TestSeeds$' -sim.seed=%d -v", rep, dir, seed)
		}
	}
	t.Logf("%.1f simulated seconds in %.1f s", float64(virtual)/1e9, time.Since(start).Seconds())
}

func keepReport(t *testing.T, rep Report) string {
	root := os.Getenv("NODED_REPORTS")
	if root == "" {
		root = filepath.Join("..", "reports")
	}
	dir := filepath.Join(root, fmt.Sprintf("seed-%d", rep.Seed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("keeping report: %v", err)
		return "(not kept)"
	}
	_ = os.WriteFile(filepath.Join(dir, "report.txt"), []byte(rep.String()+"\n"+rep.Check.String()), 0o644)
	if f, err := os.Create(filepath.Join(dir, "history.txt")); err == nil {
		_ = linearizability.WriteHistory(rep.Input, f)
		f.Close()
	}
	if f, err := os.Create(filepath.Join(dir, "history.html")); err == nil {
		_ = linearizability.VisualizeKV(rep.Input, f)
		f.Close()
	}
	return dir
}

// TestDeterminism runs seeds twice: the same seed must take the same steps.
func TestDeterminism(t *testing.T) {
	if testing.Short() {
		t.Skip("runs whole simulated clusters")
	}
	for _, seed := range []uint64{3, 17, 101} {
		a := Run(Options{Seed: seed})
		b := Run(Options{Seed: seed})
		if a.TraceHash != b.TraceHash {
			t.Errorf("seed %d: trace hashes %016x and %016x differ", seed, a.TraceHash, b.TraceHash)
		}
	}
}

// TestTraceHashGolden pins the trace hashes of a few seeds in a file that
// the native run and the WebAssembly run share: both must take exactly the
// same steps. Regenerate with -sim.update after a deliberate change.
func TestTraceHashGolden(t *testing.T) {
	path := filepath.Join("testdata", "trace_hashes.txt")
	if *flagUpdate {
		var b strings.Builder
		b.WriteString("# seed trace-hash: the same natively and under GOOS=js GOARCH=wasm\n")
		for _, seed := range []uint64{1, 2, 5, 9} {
			rep := Run(Options{Seed: seed})
			fmt.Fprintf(&b, "%d %016x\n", seed, rep.TraceHash)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v (generate it with -sim.update)", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	checked := 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var seed uint64
		var want string
		if _, err := fmt.Sscanf(line, "%d %s", &seed, &want); err != nil {
			t.Fatalf("bad line %q", line)
		}
		rep := Run(Options{Seed: seed})
		if got := fmt.Sprintf("%016x", rep.TraceHash); got != want {
			t.Errorf("seed %d: trace hash %s, golden %s", seed, got, want)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no seeds in the golden file")
	}
}

func TestFailingCheckers(t *testing.T) {
	rep := Report{Failures: []string{
		"at 12ms: persist-before-send: m1 acknowledged entries up to 9",
		"kv-linearizability: not linearizable: client 1",
		"at 40ms: persist-before-send: m2 sent MsgVoteResp",
		"lease-expiry-time: lease 7 expired at 1ms",
	}}
	got := strings.Join(FailingCheckers(rep), ",")
	if want := "persist-before-send,kv-linearizability,lease-expiry-time"; got != want {
		t.Fatalf("FailingCheckers = %s, want %s", got, want)
	}
}

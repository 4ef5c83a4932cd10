// Command nodesim runs the noded cluster simulator: one seed, or a
// campaign of seeds with progress and a summary. Every failing seed's
// report (knobs, failures, the history and porcupine's HTML visualization)
// is kept under -reports.
//
//	go run ./cmd/nodesim -seed 42            # one seed: knobs, outcome, trace hash
//	go run ./cmd/nodesim -seed 42 -trace     # ... and every event
//	go run ./cmd/nodesim -seeds 0-999 -parallel 2
//	go run ./cmd/nodesim -duration 1h -parallel 2   # random seeds until time is up
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/noded/noded/linearizability"
	"github.com/noded/noded/node"
	"github.com/noded/noded/sim"
)

func main() {
	seed := flag.Uint64("seed", 0, "run this one seed")
	seeds := flag.String("seeds", "", "run a range of seeds, `A-B` inclusive")
	duration := flag.Duration("duration", 0, "run random seeds for this long")
	parallel := flag.Int("parallel", 1, "seeds run at once, each in its own process")
	reports := flag.String("reports", "reports", "directory for failing seeds' reports")
	trace := flag.Bool("trace", false, "print every event of a single-seed run")
	planted := flag.String("planted", "", "plant bugs (checker self-tests): comma list of "+
		strings.Join(append(node.PlantedBugNames(), unfencedLocks), ","))
	worker := flag.Bool("worker", false, "internal: read seeds on stdin, write results on stdout")
	flag.Parse()

	bugs, err := parsePlanted(*planted)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodesim:", err)
		os.Exit(2)
	}
	switch {
	case *worker:
		runWorker(bugs)
	case *seeds != "" || *duration > 0:
		os.Exit(campaign(*seeds, *duration, *parallel, *reports, *planted))
	default:
		os.Exit(single(*seed, *trace, *reports, bugs))
	}
}

// unfencedLocks is the planted bug of the lock workload, not of the
// member: lock holders write without the fencing guard.
const unfencedLocks = "unfenced-locks"

// planted is what -planted asks for: bugs in the member, and the workload's.
type planted struct {
	node          node.PlantedBugs
	unfencedLocks bool
}

func parsePlanted(s string) (planted, error) {
	var p planted
	var rest []string
	for _, name := range strings.Split(s, ",") {
		if strings.TrimSpace(name) == unfencedLocks {
			p.unfencedLocks = true
			continue
		}
		rest = append(rest, name)
	}
	var err error
	p.node, err = node.ParsePlantedBugs(strings.Join(rest, ","))
	return p, err
}

func (p planted) options(seed uint64) sim.Options {
	opts := sim.Options{Seed: seed, Planted: p.node}
	if p.unfencedLocks {
		opts.Tweak = func(k *sim.Knobs) { k.UnfencedLocks = true }
	}
	return opts
}

func single(seed uint64, trace bool, reports string, bugs planted) int {
	opts := bugs.options(seed)
	if trace {
		opts.Trace = os.Stdout
	}
	fmt.Printf("seed %d\n%s\n", seed, sim.Draw(seed))
	start := time.Now()
	rep := sim.Run(opts)
	elapsed := time.Since(start)
	fmt.Print(rep.String())
	fmt.Printf("wall %.2fs, %.0fx real time\n", elapsed.Seconds(), float64(rep.Stats.VirtualNs)/float64(elapsed.Nanoseconds()))
	if !rep.OK {
		dir, err := writeReport(reports, rep)
		if err != nil {
			fmt.Fprintln(os.Stderr, "nodesim: writing report:", err)
		} else {
			fmt.Printf("report: %s\n", dir)
		}
		return 1
	}
	return 0
}

// writeReport keeps everything a failing seed left: the report text, the
// history as JSON lines, and porcupine's visualization.
func writeReport(root string, rep sim.Report) (string, error) {
	dir := filepath.Join(root, fmt.Sprintf("seed-%d", rep.Seed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.txt"), []byte(rep.String()+"\n"+rep.Check.String()), 0o644); err != nil {
		return "", err
	}
	hist, err := os.Create(filepath.Join(dir, "history.txt"))
	if err != nil {
		return "", err
	}
	defer hist.Close()
	if err := linearizability.WriteHistory(rep.Input, hist); err != nil {
		return dir, fmt.Errorf("history: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, "history.html"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := linearizability.VisualizeKV(rep.Input, f); err != nil {
		return dir, fmt.Errorf("visualize: %w", err)
	}
	return dir, nil
}

// A campaign fans seeds out to worker processes (runs of the simulator must
// not overlap in one process: raft's election jitter reads a global).
type result struct {
	Seed      uint64    `json:"seed"`
	OK        bool      `json:"ok"`
	TraceHash string    `json:"trace"`
	Report    string    `json:"report"`
	WallSec   float64   `json:"wall"`
	VirtualNs int64     `json:"virtual_ns"`
	Stats     sim.Stats `json:"stats"`
	Checkers  []string  `json:"checkers"` // the checkers that reported failures, once each
}

// workerGCPercent is a worker's garbage collector target unless GOGC says
// otherwise: simulation runs allocate heavily and briefly, and collecting a
// quarter as often costs a few hundred megabytes a worker and saves about a
// third of its CPU time.
const workerGCPercent = 400

func runWorker(bugs planted) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(workerGCPercent)
	}
	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		seed, err := strconv.ParseUint(strings.TrimSpace(in.Text()), 10, 64)
		if err != nil {
			continue
		}
		start := time.Now()
		rep := sim.Run(bugs.options(seed))
		res := result{Seed: seed, OK: rep.OK, TraceHash: fmt.Sprintf("%016x", rep.TraceHash), WallSec: time.Since(start).Seconds(),
			VirtualNs: rep.Stats.VirtualNs, Stats: rep.Stats, Checkers: sim.FailingCheckers(rep)}
		if !rep.OK {
			res.Report = rep.String()
			if dir, err := writeReport(os.Getenv("NODESIM_REPORTS"), rep); err == nil {
				res.Report += "report: " + dir + "\n"
			}
		}
		if err := out.Encode(res); err != nil {
			os.Exit(1)
		}
	}
}

func campaign(seedRange string, duration time.Duration, parallel int, reports, planted string) int {
	var next func() (uint64, bool)
	total := -1
	if seedRange != "" {
		lo, hi, err := parseRange(seedRange)
		if err != nil {
			fmt.Fprintln(os.Stderr, "nodesim:", err)
			return 2
		}
		cur := lo
		total = int(hi - lo + 1)
		next = func() (uint64, bool) {
			if cur > hi {
				return 0, false
			}
			cur++
			return cur - 1, true
		}
	} else {
		deadline := time.Now().Add(duration)
		next = func() (uint64, bool) {
			if time.Now().After(deadline) {
				return 0, false
			}
			return rand.Uint64(), true
		}
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodesim:", err)
		return 2
	}
	var mu sync.Mutex
	var done, failed int
	var failedSeeds []uint64
	var wall, virtual float64
	faults := newFaultTally()
	caughtBy := map[string]int{} // checker -> seeds it failed; printed sorted
	start := time.Now()
	getSeed := func() (uint64, bool) {
		mu.Lock()
		defer mu.Unlock()
		return next()
	}
	var wg sync.WaitGroup
	for i := 0; i < max(1, parallel); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A worker that dies (a member panicked: a planted bug can make
			// raft's own assertions fire) fails its seed; a fresh worker
			// takes the next ones.
			for {
				cmd := exec.Command(self, "-worker", "-planted", planted)
				cmd.Env = append(os.Environ(), "NODESIM_REPORTS="+reports)
				cmd.Stderr = os.Stderr
				stdin, _ := cmd.StdinPipe()
				stdout, _ := cmd.StdoutPipe()
				if err := cmd.Start(); err != nil {
					fmt.Fprintln(os.Stderr, "nodesim: worker:", err)
					return
				}
				dec := json.NewDecoder(stdout)
				died := false
				for !died {
					seed, ok := getSeed()
					if !ok {
						break
					}
					fmt.Fprintln(stdin, seed)
					var res result
					if err := dec.Decode(&res); err != nil {
						fmt.Fprintf(os.Stderr, "nodesim: seed %d: worker died: %v\n", seed, err)
						res = result{Seed: seed, Report: fmt.Sprintf("seed %d: the worker died\nreplay: go run ./cmd/nodesim -seed %d\n", seed, seed),
							Checkers: []string{"worker-died"}}
						died = true
					}
					mu.Lock()
					done++
					wall += res.WallSec
					virtual += float64(res.VirtualNs) / 1e9
					faults.add(res.Stats)
					for _, c := range res.Checkers {
						caughtBy[c]++
					}
					if !res.OK {
						failed++
						failedSeeds = append(failedSeeds, seed)
						fmt.Print(res.Report)
					}
					if done%10 == 0 || done == total {
						fmt.Println(progressLine(done, total, failed, time.Since(start)))
					}
					mu.Unlock()
				}
				stdin.Close()
				_ = cmd.Wait()
				if !died {
					return
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("summary: %d seeds, %d failed, %.1f simulated seconds in %.1f s of worker time (%.0fx real time), %.1f seeds/s\n",
		done, failed, virtual, wall, virtual/max(wall, 1e-9), float64(done)/max(time.Since(start).Seconds(), 1e-9))
	fmt.Printf("faults exercised: %s\n", faults)
	if len(caughtBy) > 0 {
		fmt.Printf("failures by checker (seeds): %s\n", countsString(caughtBy))
	}
	if failed > 0 {
		fmt.Printf("failed seeds: %v\n", failedSeeds)
		return 1
	}
	return 0
}

// progressLine reports a campaign's progress: seeds done (of how many, when
// known), failures, the rate, and for a seed range the time left at it.
func progressLine(done, total, failed int, elapsed time.Duration) string {
	rate := float64(done) / max(elapsed.Seconds(), 1e-9)
	line := fmt.Sprintf("progress: %d", done)
	if total > 0 {
		line += fmt.Sprintf("/%d", total)
	}
	line += fmt.Sprintf(" seeds, %d failed, %.1f seeds/s, %.0fs elapsed", failed, rate, elapsed.Seconds())
	if total > 0 && rate > 0 {
		line += fmt.Sprintf(", ETA %.0fs", float64(total-done)/rate)
	}
	return line
}

// faultTally counts, for each fault kind, how often a campaign injected it
// and in how many seeds.
type faultTally struct {
	times, seeds map[string]int
}

func newFaultTally() *faultTally {
	return &faultTally{times: map[string]int{}, seeds: map[string]int{}}
}

func (t *faultTally) add(s sim.Stats) {
	for _, f := range []struct {
		name string
		n    int64
	}{
		{"crashes", s.Crashes}, {"partitions", s.Partitions}, {"pauses", s.Pauses}, {"clock-jumps", s.ClockJumps},
		{"fsync-errors", s.FsyncErrors}, {"corrupted", s.Corrupted}, {"fail-stops", s.FailStops},
		{"member-changes", s.MemberChanges}, {"snapshots", s.Snapshots},
		{"lost-messages", s.Net.Lost}, {"duplicated-messages", s.Net.Duplicated},
	} {
		if f.n > 0 {
			t.times[f.name] += int(f.n)
			t.seeds[f.name]++
		}
	}
}

func (t *faultTally) String() string {
	var parts []string
	for _, name := range sortedKeys(t.times) {
		parts = append(parts, fmt.Sprintf("%s=%d (%d seeds)", name, t.times[name], t.seeds[name]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

func countsString(m map[string]int) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func parseRange(s string) (uint64, uint64, error) {
	a, b, ok := strings.Cut(s, "-")
	lo, err1 := strconv.ParseUint(a, 10, 64)
	hi := lo
	var err2 error
	if ok {
		hi, err2 = strconv.ParseUint(b, 10, 64)
	}
	if err1 != nil || err2 != nil || hi < lo {
		return 0, 0, fmt.Errorf("bad seed range %q: want A-B", s)
	}
	return lo, hi, nil
}

package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/noded/noded/cmd/internal/memberproc"
	"github.com/noded/noded/linearizability"
	"github.com/noded/noded/node"
)

// Config is one run's setting.
type Config struct {
	Binary   string        // the noded binary
	Seed     uint64        // decides the plan
	Duration time.Duration // of the workload under faults
	Members  int           // 0: from the seed
	Kinds    []FaultKind   // nil: a seeded subset of what this machine can inject
	// Planted is a comma-separated list of node.PlantedBugNames, for a
	// binary built with -tags nodedplanted; it goes to the members in
	// their environment.
	Planted string
	// RetryTxns makes clients retry a txn that failed with an unknown
	// outcome, as an application would.
	RetryTxns bool
	OutDir    string // the run keeps its directory under it when it fails
	Keep      bool   // keep the directory even when the run passes
	Logf      func(format string, args ...any)
	// Replay is the command line that replays this run's schedule, printed
	// when it fails.
	Replay string
}

// Result is what one run found.
type Result struct {
	Plan        Plan
	Dir         string
	Operations  int
	Watches     int
	WatchEvents int
	KeepAlives  int
	Faults      map[FaultKind]int // faults injected, by kind
	// Failures are violations: checker failures, members whose states
	// diverged, a cluster that never recovered.
	Failures []string
	// RetriedTxns counts txns the clients sent again after an unknown
	// outcome (Config.RetryTxns).
	RetriedTxns int64
	Check       linearizability.Result
	External    linearizability.ExternalStats
	// Err is a failure of the harness itself (a member that would not
	// start, a log that could not be rebuilt).
	Err     error
	Elapsed time.Duration
	Replay  string
}

// Failed reports whether the run found a violation or could not finish.
func (r *Result) Failed() bool { return r.Err != nil || len(r.Failures) > 0 }

// Unavailable explains, per fault kind, why this machine cannot inject it.
func Unavailable(scratch string) map[FaultKind]error {
	tmpfsErr, fuseErr := canMount(scratch)
	out := map[FaultKind]error{}
	if tmpfsErr != nil {
		out[FaultDiskFull] = tmpfsErr
	}
	if fuseErr != nil {
		out[FaultLostWrites] = fuseErr
		out[FaultClusterPowerOff] = fuseErr
	}
	return out
}

// heal and check bounds.
const (
	convergeTimeout = 30 * time.Second
	// afterHeal is how long the workload goes on once every fault is
	// healed, so the history shows the cluster serving again.
	afterHeal = 2 * time.Second
	// workloadStopTimeout bounds the wait for clients to finish their last
	// operation (each is bounded by opTimeout).
	workloadStopTimeout = 2 * opTimeout
)

// Run runs one seed: start the cluster, drive it under the plan's faults,
// heal it, stop it, rebuild the committed log and check everything.
func Run(cfg Config, available []FaultKind) *Result {
	started := time.Now()
	plan := NewPlan(cfg.Seed, PlanOptions{Duration: cfg.Duration, Members: cfg.Members, Kinds: cfg.Kinds, Available: available})
	res := &Result{Plan: plan, Faults: map[FaultKind]int{}, Replay: cfg.Replay}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	res.Dir = filepath.Join(cfg.OutDir, fmt.Sprintf("seed-%d", cfg.Seed))
	_ = os.RemoveAll(res.Dir)
	if err := os.MkdirAll(res.Dir, 0o755); err != nil {
		res.Err = err
		return res
	}
	faultLog, err := os.Create(filepath.Join(res.Dir, "faults.log"))
	if err != nil {
		res.Err = err
		return res
	}
	defer faultLog.Close()
	var logMu sync.Mutex
	rec := newRecorder()
	flog := func(format string, args ...any) {
		line := fmt.Sprintf("%8.3fs ", time.Duration(rec.now()).Seconds()) + fmt.Sprintf(format, args...)
		logMu.Lock()
		fmt.Fprintln(faultLog, line)
		logMu.Unlock()
		logf("seed %d: %s", cfg.Seed, line)
	}
	_ = os.WriteFile(filepath.Join(res.Dir, "plan.txt"), []byte(plan.String()+"\nreplay: "+cfg.Replay+"\n"), 0o644)
	env := memberproc.Env()
	if cfg.Planted != "" {
		env = append(env, "NODED_PLANTED_BUGS="+cfg.Planted)
	}
	c, err := newCluster(plan, cfg.Binary, res.Dir, env, flog)
	if err != nil {
		res.Err = err
		return res
	}
	defer c.close()
	if err := c.start(); err != nil {
		res.Err = fmt.Errorf("start the cluster: %w", err)
		return res
	}
	rec = newRecorder() // times count from the workload's start
	flog("cluster of %d up; workload starts", plan.Members)

	ctx, stopWorkload := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var clients []*clientv3.Client
	rng := rand.New(rand.NewPCG(cfg.Seed, 0xc1a05))
	var retried atomic.Int64
	// Clients and watchers take turns: every other one sticks to one
	// member, so a member that is cut off, paused or stale is asked too;
	// the others use every member, as applications do.
	start := func(n int, pinned bool, run func(cli *clientv3.Client, rng *rand.Rand)) error {
		eps := c.endpoints()
		if pinned {
			eps = eps[n%len(eps) : n%len(eps)+1]
		}
		cli, err := newClient(eps)
		if err != nil {
			return err
		}
		clients = append(clients, cli)
		r := rand.New(rand.NewPCG(rng.Uint64(), uint64(n)))
		wg.Add(1)
		go func() { defer wg.Done(); run(cli, r) }()
		return nil
	}
	for i := 0; i < plan.Clients+plan.Watchers && res.Err == nil; i++ {
		if i < plan.Clients {
			res.Err = start(i, i%2 == 1, func(cli *clientv3.Client, r *rand.Rand) {
				w := &worker{id: i, rng: r, cli: cli, rec: rec, keys: plan.Keys, retryTxns: cfg.RetryTxns, retried: &retried}
				w.kv, w.lease = retryClients(cli)
				w.run(ctx)
			})
		} else {
			res.Err = start(i, i%2 == 0, func(cli *clientv3.Client, r *rand.Rand) {
				(&watcher{id: i, rng: r, cli: cli, rec: rec}).run(ctx)
			})
		}
	}
	if res.Err != nil {
		stopWorkload()
		wg.Wait()
		return res
	}

	// The faults, one at a time, on the plan's schedule.
	faultRng := rand.New(rand.NewPCG(cfg.Seed, 0xfa017))
	for _, s := range plan.Steps {
		if wait := s.At - time.Duration(rec.now()); wait > 0 {
			time.Sleep(wait)
		}
		if done, err := c.inject(s, faultRng, flog); err != nil {
			flog("%s: not injected: %v", s, err)
		} else if done {
			res.Faults[s.Kind]++
		}
	}
	if wait := plan.Duration - time.Duration(rec.now()); wait > 0 {
		time.Sleep(wait)
	}
	flog("healing every fault")
	if err := c.heal(); err != nil {
		flog("heal: %v", err)
	}
	time.Sleep(afterHeal)
	stopWorkload()
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(workloadStopTimeout):
		flog("clients still busy %v after the stop", workloadStopTimeout)
	}
	appliedIndex, err := c.converge(convergeTimeout)
	switch {
	case errors.Is(err, errDiverged), errors.Is(err, errNoProgress):
		res.Failures = append(res.Failures, err.Error())
	case err != nil:
		res.Err = err
	}
	flog("converged at applied index %d; stopping members", appliedIndex)
	c.stopAll()
	<-stopped
	for _, cli := range clients {
		cli.Close()
	}

	in, err := c.checkerInput(rec, appliedIndex)
	if err != nil {
		if errors.Is(err, errLogDisagreement) {
			res.Failures = append(res.Failures, err.Error())
		} else if res.Err == nil {
			res.Err = fmt.Errorf("rebuild the committed log: %w", err)
		}
	}
	res.Operations, res.Watches, res.KeepAlives = len(in.History), len(in.Watches), len(in.KeepAlives)
	res.RetriedTxns = retried.Load()
	if err == nil {
		res.External = linearizability.ResolveExternal(&in)
		res.Check = linearizability.Check(in, linearizability.Options{Timeout: time.Minute})
		res.WatchEvents = res.Check.Stats.WatchEvents
		for _, f := range res.Check.Failures {
			res.Failures = append(res.Failures, f.String())
		}
		if res.Check.Stats.FailuresOmitted > 0 {
			res.Failures = append(res.Failures, fmt.Sprintf("(%d more failures not shown)", res.Check.Stats.FailuresOmitted))
		}
	}
	res.Elapsed = time.Since(started)
	writeArtifacts(res, in, c, flog)
	if !res.Failed() && !cfg.Keep {
		c.close()
		_ = os.RemoveAll(res.Dir)
		_ = os.RemoveAll(res.Dir) // mounts are gone after close
	}
	return res
}

// checkerInput gathers what the checkers read.
func (c *cluster) checkerInput(rec *recorder, appliedIndex uint64) (linearizability.Input, error) {
	cfg := node.Config{TickMs: int64(c.plan.HeartbeatMs), ElectionTicks: c.plan.ElectionMs / c.plan.HeartbeatMs}
	in := linearizability.Input{
		History:    rec.history,
		KeepAlives: rec.keepAlives,
		// Members count ticks on Go timers, which never fire early on the
		// monotonic clock the recorder reads too: a member's second is
		// never shorter than a true one.
		Clocks:             linearizability.Clocks{ShortestSecondNs: 1e9},
		MinLeaseTTLSeconds: cfg.MinLeaseTTLSeconds(),
		MaxTxnOps:          node.DefaultMaxTxnOps,
	}
	for _, w := range rec.watches {
		in.Watches = append(in.Watches, *w)
	}
	var wals []*walLog
	for _, m := range c.members {
		for i, d := range m.dataDirs {
			w, err := readWAL(fmt.Sprintf("%s incarnation %d", m.name, i+1), d, i == len(m.dataDirs)-1)
			if errors.Is(err, os.ErrNotExist) {
				continue // never got as far as creating its WAL
			}
			if err != nil {
				return in, fmt.Errorf("read the WAL of %s: %w", d, err)
			}
			wals = append(wals, w)
		}
	}
	committed, _, err := committedLog(wals, appliedIndex)
	in.Committed = committed
	return in, err
}

// writeArtifacts leaves what a failing run needs to be understood in its
// directory: the plan and replay command (plan.txt), the fault timeline
// (faults.log), each member's log (m*.log) and data (m*/), the verdict
// (check.txt), the history as the checkers read it (history.txt) and
// porcupine's visualization (porcupine.html).
func writeArtifacts(res *Result, in linearizability.Input, c *cluster, flog func(string, ...any)) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n", res.Plan)
	if res.Err != nil {
		fmt.Fprintf(&b, "harness error: %v\n", res.Err)
	}
	for _, f := range res.Failures {
		fmt.Fprintf(&b, "violation: %s\n", f)
	}
	fmt.Fprintf(&b, "%s\n%s\n", res.External, res.Check)
	fmt.Fprintf(&b, "replay: %s\n", res.Replay)
	_ = os.WriteFile(filepath.Join(res.Dir, "check.txt"), []byte(b.String()), 0o644)
	if !res.Failed() {
		return
	}
	for _, m := range c.members {
		if m.disk != nil {
			if err := m.disk.preserve(m.root + ".kept"); err != nil {
				flog("keep %s: %v", m.root, err)
			}
		}
	}
	if f, err := os.Create(filepath.Join(res.Dir, "history.txt")); err == nil {
		_ = linearizability.WriteHistory(in, f)
		f.Close()
	}
	if f, err := os.Create(filepath.Join(res.Dir, "porcupine.html")); err == nil {
		_ = linearizability.VisualizeKV(in, f)
		f.Close()
	}
}

// inject runs one step of the plan: it injects the fault, holds it, and
// undoes it. It reports whether the fault was injected.
func (c *cluster) inject(s Step, rng *rand.Rand, flog func(string, ...any)) (bool, error) {
	target := func() (*member, error) {
		m, err := c.byTarget(s.Member)
		if err != nil {
			return nil, err
		}
		if m.removed || !m.running() {
			return nil, fmt.Errorf("%s is down", m.name)
		}
		return m, nil
	}
	others := func(m *member) []*member {
		var out []*member
		for _, o := range c.members {
			if o != m {
				out = append(out, o)
			}
		}
		return out
	}
	switch s.Kind {
	case FaultKill, FaultKillLeader:
		m, err := target()
		if err != nil {
			return false, err
		}
		flog("%s: kill -9 %s", s, m.name)
		c.kill(m)
		time.Sleep(s.Hold)
		flog("restart %s", m.name)
		return true, c.restart(m)
	case FaultPause:
		m, err := target()
		if err != nil {
			return false, err
		}
		flog("%s: SIGSTOP %s", s, m.name)
		c.pause(m)
		time.Sleep(s.Hold)
		flog("SIGCONT %s", m.name)
		c.resume(m)
		return true, nil
	case FaultIsolateLeader:
		m, err := target()
		if err != nil {
			return false, err
		}
		flog("%s: isolate %s", s, m.name)
		for _, o := range others(m) {
			c.links.set(m.slot, o.slot, true)
			c.links.set(o.slot, m.slot, true)
		}
		time.Sleep(s.Hold)
		c.links.healAll()
		flog("healed")
		return true, nil
	case FaultOneWay:
		m, err := target()
		if err != nil {
			return false, err
		}
		tos := others(m)
		if s.Peer >= 0 && s.Peer != m.slot {
			tos = []*member{c.members[s.Peer]}
		}
		var names []string
		for _, o := range tos {
			c.links.set(m.slot, o.slot, true)
			names = append(names, o.name)
		}
		flog("%s: drop %s -> %s", s, m.name, strings.Join(names, ","))
		time.Sleep(s.Hold)
		c.links.healAll()
		flog("healed")
		return true, nil
	case FaultSplit:
		for _, a := range s.Minority {
			for b := range c.members {
				if !slices.Contains(s.Minority, b) {
					c.links.set(a, b, true)
					c.links.set(b, a, true)
				}
			}
		}
		flog("%s: partitioned", s)
		time.Sleep(s.Hold)
		c.links.healAll()
		flog("healed")
		return true, nil
	case FaultDiskFull:
		m := c.members[s.Member]
		if m.disk == nil {
			return false, errors.New("no small disk mounted")
		}
		n, err := m.disk.fill()
		if err != nil {
			return false, err
		}
		flog("%s: filled %s's disk with %d MiB", s, m.name, n>>20)
		time.Sleep(s.Hold)
		if err := m.disk.free(); err != nil {
			return true, err
		}
		if !m.running() && !m.removed {
			flog("%s stopped on the full disk; restarting it", m.name)
			return true, c.restart(m)
		}
		flog("freed %s's disk", m.name)
		return true, nil
	case FaultLostWrites:
		m := c.members[s.Member]
		if m.lazy == nil || m.removed {
			return false, errors.New("not on the lost-writes layer")
		}
		m.lazy.powerCut()
		c.kill(m)
		files, bytes := m.lazy.loseUnsynced()
		flog("%s: kill -9 %s and drop its unsynced writes (%d bytes in %d files)", s, m.name, bytes, files)
		time.Sleep(s.Hold)
		return true, c.restart(m)
	case FaultClusterPowerOff:
		for _, m := range c.members {
			if m.lazy != nil {
				m.lazy.powerCut()
			}
		}
		var wg sync.WaitGroup
		for _, m := range c.members {
			wg.Add(1)
			go func() { defer wg.Done(); c.kill(m) }()
		}
		wg.Wait()
		var lost, files int64
		for _, m := range c.members {
			if m.lazy != nil {
				f, b := m.lazy.loseUnsynced()
				lost, files = lost+b, files+f
			}
		}
		flog("%s: kill -9 every member and drop unsynced writes (%d bytes in %d files)", s, lost, files)
		time.Sleep(s.Hold)
		var errs []error
		for _, m := range c.members {
			errs = append(errs, c.restart(m))
		}
		return true, errors.Join(errs...)
	case FaultReplace:
		m := c.members[s.Member]
		if m.disk != nil {
			return false, errors.New("the small-disk member is not replaced (its old WAL fills the disk)")
		}
		for _, o := range c.members {
			// One member out at a time: the rest must stay a quorum of
			// the smaller cluster, or the add cannot commit.
			if o.removed || !o.running() || o.paused {
				return false, fmt.Errorf("%s is down", o.name)
			}
		}
		flog("%s: replace %s", s, m.name)
		return true, c.replace(m)
	case FaultTransferLeader:
		flog("%s", s)
		return true, c.transferLeader(rng.IntN)
	}
	return false, fmt.Errorf("unknown fault kind %q", s.Kind)
}

// Figures adds up a campaign.
type Figures struct {
	Runs        int
	Failed      int
	HarnessErrs int
	Operations  int
	Watches     int
	WatchEvents int
	KeepAlives  int
	RetriedTxns int64
	Faults      map[FaultKind]int
	Violations  map[string]int // by checker (the text before the first colon)
	Elapsed     time.Duration
}

// Add counts one run.
func (f *Figures) Add(r *Result) {
	if f.Faults == nil {
		f.Faults, f.Violations = map[FaultKind]int{}, map[string]int{}
	}
	f.Runs++
	if r.Failed() {
		f.Failed++
	}
	if r.Err != nil {
		f.HarnessErrs++
	}
	f.Operations += r.Operations
	f.Watches += r.Watches
	f.WatchEvents += r.WatchEvents
	f.KeepAlives += r.KeepAlives
	f.RetriedTxns += r.RetriedTxns
	for k, n := range r.Faults {
		f.Faults[k] += n
	}
	for _, v := range r.Failures {
		name, _, _ := strings.Cut(v, ":")
		f.Violations[name]++
	}
	f.Elapsed += r.Elapsed
}

func (f Figures) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d runs (%d failed, %d harness errors) in %v: %d operations, %d watches (%d events), %d answered keepalives, %d txns retried after an unknown outcome\n",
		f.Runs, f.Failed, f.HarnessErrs, f.Elapsed.Round(time.Second), f.Operations, f.Watches, f.WatchEvents, f.KeepAlives, f.RetriedTxns)
	b.WriteString("faults injected:")
	for _, k := range AllFaultKinds {
		fmt.Fprintf(&b, " %s=%d", k, f.Faults[k])
	}
	b.WriteString("\nviolations:")
	if len(f.Violations) == 0 {
		b.WriteString(" none")
	}
	var names []string
	for n := range f.Violations {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, " %s=%d", n, f.Violations[n])
	}
	b.WriteString("\n")
	return b.String()
}

// AvailableKinds lists the fault kinds this machine can inject, with a note
// for each left out and why.
func AvailableKinds(scratch string) ([]FaultKind, []string) {
	missing := Unavailable(scratch)
	var kinds []FaultKind
	var notes []string
	for _, k := range AllFaultKinds {
		if err, ok := missing[k]; ok {
			notes = append(notes, fmt.Sprintf("fault kind %s left out: %v", k, err))
			continue
		}
		kinds = append(kinds, k)
	}
	return kinds, notes
}

// ReplayCommand is the command line that runs cfg's seed with cfg's plan
// again.
func ReplayCommand(cfg Config) string {
	cmd := fmt.Sprintf("go run ./cmd/nodechaos -seed=%d -duration=%v", cfg.Seed, cfg.Duration)
	if cfg.Members != 0 {
		cmd += fmt.Sprintf(" -members=%d", cfg.Members)
	}
	if cfg.Kinds != nil {
		ks := []string{"none"}
		if len(cfg.Kinds) > 0 {
			ks = ks[:0]
		}
		for _, k := range cfg.Kinds {
			ks = append(ks, string(k))
		}
		cmd += " -kinds=" + strings.Join(ks, ",")
	}
	if cfg.Planted != "" {
		cmd += " -planted=" + cfg.Planted
	}
	if cfg.RetryTxns {
		cmd += " -retry-txns"
	}
	return cmd
}

// Verdict renders a run's outcome: one line when it passed; the violations,
// where its evidence is and how to replay it when it failed.
func Verdict(r *Result) string {
	var b strings.Builder
	status := "PASS"
	if r.Failed() {
		status = "FAIL"
	}
	var faults []string
	for _, k := range AllFaultKinds {
		if n := r.Faults[k]; n > 0 {
			faults = append(faults, fmt.Sprintf("%s=%d", k, n))
		}
	}
	fmt.Fprintf(&b, "seed %d: %s in %v: %d operations, %d watches (%d events), %d keepalives; faults %s; %s\n",
		r.Plan.Seed, status, r.Elapsed.Round(time.Second), r.Operations, r.Watches, r.WatchEvents, r.KeepAlives,
		strings.Join(faults, " "), r.External)
	if r.Err != nil {
		fmt.Fprintf(&b, "  harness error: %v\n", r.Err)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "  violation: %s\n", f)
	}
	if r.Failed() {
		fmt.Fprintf(&b, "  evidence: %s\n  replay:   %s\n", r.Dir, r.Replay)
	}
	return b.String()
}

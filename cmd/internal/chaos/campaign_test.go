package chaos

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The campaign tests start real noded processes: a bounded campaign that
// runs in CI, and the planted-bug runs that show the checkers catch each
// bug the simulator knows through real processes too. Knobs:
//
//	NODED_CHAOS=0                 skip them
//	NODED_CHAOS_RUNS=N            seeds in the campaign (default 3)
//	NODED_CHAOS_DURATION=20s      workload under faults per run (default 12s)
//	NODED_CHAOS_SEED=S            first seed (default 1: CI runs the same plans every time)
//	NODED_CHAOS_OUT=dir           where failing runs are kept (default: a temp dir, kept on failure)

var (
	binaryNormal, binaryPlanted string
	chaosSkip                   string
	chaosOut                    string
)

func TestMain(m *testing.M) {
	os.Exit(mainWithBinaries(m))
}

func mainWithBinaries(m *testing.M) int {
	if os.Getenv("NODED_CHAOS") == "0" {
		chaosSkip = "NODED_CHAOS=0"
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "nodechaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if binaryNormal, err = BuildNoded(dir, false); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if binaryPlanted, err = BuildNoded(dir, true); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	chaosOut = os.Getenv("NODED_CHAOS_OUT")
	if chaosOut == "" {
		if chaosOut, err = os.MkdirTemp("", "nodechaos-runs-"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	code := m.Run()
	if code == 0 && os.Getenv("NODED_CHAOS_OUT") == "" {
		os.RemoveAll(chaosOut)
	}
	return code
}

func requireChaos(t *testing.T) {
	t.Helper()
	if chaosSkip != "" {
		t.Skip("chaos: " + chaosSkip)
	}
	if testing.Short() {
		t.Skip("chaos: -short")
	}
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// TestCampaign runs seeds with every fault kind this machine can inject,
// swarm style, and fails on any violation, printing where the evidence is
// and the command that replays the schedule. Every other run has its
// clients retry txns whose outcome they did not learn, as applications do.
func TestCampaign(t *testing.T) {
	requireChaos(t)
	runs := envInt(t, "NODED_CHAOS_RUNS", 3)
	duration := envDuration(t, "NODED_CHAOS_DURATION", 12*time.Second)
	first := uint64(envInt(t, "NODED_CHAOS_SEED", 1))
	available, notes := AvailableKinds(chaosOut)
	for _, n := range notes {
		t.Log(n)
	}
	var figures Figures
	for i := 0; i < runs; i++ {
		cfg := Config{Binary: binaryNormal, Seed: first + uint64(i), Duration: duration, OutDir: chaosOut, RetryTxns: i%2 == 1}
		cfg.Replay = ReplayCommand(cfg)
		res := Run(cfg, available)
		figures.Add(res)
		t.Logf("%s%s", res.Plan, Verdict(res))
		if res.Failed() {
			t.Errorf("seed %d failed:\n%s", cfg.Seed, Verdict(res))
		}
	}
	t.Logf("campaign: %s", figures)
}

// plantedCases pairs each planted bug with the faults that expose it and
// the checker that must report it.
var plantedCases = []struct {
	bug     string
	kinds   []FaultKind
	checker string
	// also are other violations the bug may show first: acknowledging
	// appends before they are durable lets members lose entries they
	// promised, so their logs can disagree and the cluster can diverge
	// before any client write is lost.
	also []string
}{
	// Acknowledged before durable: lost when every member loses its
	// unsynced writes at once.
	{bug: "ack-before-sync", kinds: []FaultKind{FaultClusterPowerOff}, checker: "durability",
		also: []string{errLogDisagreement.Error(), errDiverged.Error()}},
	// A paused leader answers the reads queued meanwhile from its stale
	// state, after the rest of the cluster moved on.
	{bug: "local-linearizable-reads", kinds: []FaultKind{FaultPause, FaultIsolateLeader}, checker: "kv-linearizability"},
	{bug: "drop-watch-event", kinds: []FaultKind{FaultKill}, checker: "watch-reliable"},
	// Expiries ahead of the TTL a client was promised, seen through the
	// clients' own reads and watches. No faults: every change of leader
	// gives every lease a fresh TTL, and expiries are what is judged.
	{bug: "lease-expire-early", kinds: []FaultKind{}, checker: "lease-expiry-time"},
	{bug: "lease-expire-tick-early", kinds: []FaultKind{}, checker: "lease-expiry-time"},
	{bug: "lease-expire-unrounded", kinds: []FaultKind{}, checker: "lease-expiry-time"},
	// A revoked lease back in the store: puts onto it succeed, and so does
	// revoking it again, which the log's replay refuses.
	{bug: "lease-resurrect", kinds: []FaultKind{}, checker: "lease-revoke", also: []string{"durability", "kv-linearizability"}},
}

// TestPlantedBugsAreCaught runs noded built with -tags nodedplanted and one
// planted bug at a time, and requires the run to fail with the checker that
// exists for that bug.
func TestPlantedBugsAreCaught(t *testing.T) {
	requireChaos(t)
	available, _ := AvailableKinds(chaosOut)
	duration := envDuration(t, "NODED_CHAOS_DURATION", 12*time.Second)
	for i, c := range plantedCases {
		t.Run(c.bug, func(t *testing.T) {
			for _, k := range c.kinds {
				if !containsKind(available, k) {
					t.Skipf("fault kind %s cannot be injected here", k)
				}
			}
			checkers := append([]string{c.checker}, c.also...)
			// A bug that shows only now and then (an expiry a few
			// milliseconds early, seen through the clients' reads) gets a
			// few runs; a run that fails by another checker ends the test.
			for run := 0; run < plantedRunsMax; run++ {
				cfg := Config{Binary: binaryPlanted, Seed: uint64(1000 + 100*run + i), Duration: duration, Members: 3, Kinds: c.kinds, Planted: c.bug, OutDir: chaosOut}
				cfg.Replay = ReplayCommand(cfg)
				res := Run(cfg, available)
				if res.Err != nil {
					t.Fatalf("the run did not finish: %v", res.Err)
				}
				caught := 0
				for _, f := range res.Failures {
					for _, checker := range checkers {
						if strings.HasPrefix(f, checker+":") {
							caught++
							break
						}
					}
				}
				if caught > 0 {
					t.Logf("planted bug %s caught in run %d: %d of %d violations by %s; first: %s", c.bug, run+1, caught, len(res.Failures),
						strings.Join(checkers, " or "), firstOf(res.Failures, checkers))
					return
				}
				if len(res.Failures) > 0 {
					t.Fatalf("planted bug %s not caught by %s, but:\n%s", c.bug, c.checker, Verdict(res))
				}
				t.Logf("planted bug %s not seen in run %d:\n%s", c.bug, run+1, Verdict(res))
			}
			t.Fatalf("planted bug %s not caught by %s in %d runs", c.bug, c.checker, plantedRunsMax)
		})
	}
}

// plantedRunsMax bounds the runs a planted bug gets to be caught.
const plantedRunsMax = 3

func containsKind(ks []FaultKind, k FaultKind) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

func firstOf(failures []string, checkers []string) string {
	for _, f := range failures {
		for _, checker := range checkers {
			if strings.HasPrefix(f, checker+":") {
				if len(f) > 400 {
					f = f[:400] + "..."
				}
				return f
			}
		}
	}
	return ""
}

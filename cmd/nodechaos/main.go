// Command nodechaos runs real-process fault campaigns against noded: for
// each seed, a cluster of real noded processes on loopback under a seeded
// schedule of faults (kill -9, pauses, partitions, a full disk, lost
// unsynced writes, member replacement, leader transfer), driven by
// etcd client/v3 clients, and checked by package linearizability. See
// cmd/internal/chaos.
//
//	go run ./cmd/nodechaos -runs 5                        # five seeds from a random one
//	go run ./cmd/nodechaos -seed 42 -duration 20s          # replay one seed's schedule
//	go run ./cmd/nodechaos -planted drop-watch-event -runs 1
//
// A failing run keeps its directory (plan, fault timeline, member logs and
// data, history, porcupine's HTML report) and prints the command that
// replays its schedule. The exit status is 1 if any run failed.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/noded/noded/cmd/internal/chaos"
	"github.com/noded/noded/node"
)

func main() {
	os.Exit(run())
}

func run() int {
	seed := flag.Uint64("seed", 0, "first seed (0: pick one from the clock and print it)")
	runs := flag.Int("runs", 1, "number of seeds to run, from -seed on")
	duration := flag.Duration("duration", 20*time.Second, "workload under faults, per run")
	members := flag.Int("members", 0, "cluster size (0: 3 or 5, from the seed)")
	kinds := flag.String("kinds", "", "comma-separated fault kinds to use (default: a seeded subset of all; none: no faults): "+kindNames())
	planted := flag.String("planted", "", "comma-separated planted bugs for the members (builds noded with -tags nodedplanted): "+strings.Join(node.PlantedBugNames(), ","))
	binary := flag.String("binary", "", "noded binary to run (default: build ./cmd/noded)")
	out := flag.String("out", "nodechaos-runs", "directory that keeps failing runs")
	keep := flag.Bool("keep", false, "keep passing runs' directories too")
	retryTxns := flag.Bool("retry-txns", false, "clients retry a txn whose outcome they do not know, as applications do")
	quiet := flag.Bool("q", false, "print only each run's verdict, not its fault timeline")
	flag.Parse()

	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano()%1_000_000) + 1
	}
	if _, err := node.ParsePlantedBugs(*planted); err != nil {
		fmt.Fprintln(os.Stderr, "nodechaos:", err)
		return 2
	}
	var kindList []chaos.FaultKind
	if *kinds == "none" {
		kindList = []chaos.FaultKind{} // no faults at all
	} else if *kinds != "" {
		for _, k := range strings.Split(*kinds, ",") {
			kindList = append(kindList, chaos.FaultKind(strings.TrimSpace(k)))
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "nodechaos:", err)
		return 2
	}
	if *binary == "" {
		bin, err := chaos.BuildNoded(*out, *planted != "")
		if err != nil {
			fmt.Fprintln(os.Stderr, "nodechaos:", err)
			return 2
		}
		*binary = bin
	}
	available, notes := chaos.AvailableKinds(*out)
	for _, n := range notes {
		fmt.Println("nodechaos:", n)
	}
	logf := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	if *quiet {
		logf = nil
	}
	var figures chaos.Figures
	for i := 0; i < *runs; i++ {
		s := *seed + uint64(i)
		cfg := chaos.Config{Binary: *binary, Seed: s, Duration: *duration, Members: *members, Kinds: kindList,
			Planted: *planted, RetryTxns: *retryTxns, OutDir: *out, Keep: *keep, Logf: logf}
		cfg.Replay = chaos.ReplayCommand(cfg)
		plan := chaos.NewPlan(s, chaos.PlanOptions{Duration: *duration, Members: *members, Kinds: kindList, Available: available})
		fmt.Print(plan)
		res := chaos.Run(cfg, available)
		figures.Add(res)
		fmt.Print(chaos.Verdict(res))
	}
	fmt.Print("nodechaos: ", figures)
	if figures.Failed > 0 {
		return 1
	}
	return 0
}

func kindNames() string {
	var names []string
	for _, k := range chaos.AllFaultKinds {
		names = append(names, string(k))
	}
	return strings.Join(names, ",")
}

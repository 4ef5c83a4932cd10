// Command nodebench runs noded and etcd side by side on this machine and
// drives the same workloads against each in one run, alternating between
// them in short slices so both see the same machine load, then prints
// requests/s and p50/p99 latency for both and the noded/etcd ratio.
//
//	go run ./cmd/nodebench                          # noded built from ./cmd/noded vs /usr/bin/etcd
//	go run ./cmd/nodebench -members 3 -duration 20s
//	go run ./cmd/nodebench -noded /usr/bin/etcd     # etcd vs etcd: how noisy is this machine?
//	go run ./cmd/nodebench -noded-endpoints http://127.0.0.1:2379 -etcd-endpoints http://127.0.0.1:12379
//	go run ./cmd/nodebench -etcd $D/etcd -etcdutl $D/etcdutl -snapshot-keys 1000000 -value-size 100 -rounds 2
//
// Each side is started fresh (a single member, or -members N) on loopback
// with the same flags and data directories in one temporary directory, or
// is pointed at running endpoints. Rows: put with 1 and with 100 clients
// (unique keys, -value-size values), and linearizable and serializable
// single-key ranges with 100 clients over a preloaded keyspace of -keys
// keys. A client issues one request at a time; the clients share -conns
// gRPC connections per side. Speed is only ever measured here, never
// asserted by a test.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

type options struct {
	etcdBinary, nodedBinary       string
	etcdEndpoints, nodedEndpoints string
	members                       int
	duration                      time.Duration
	requests                      int64
	rounds                        int
	conns                         int
	valueSizeBytes                int
	keys                          int
	rows                          string
	jsonOut                       bool
	keep                          bool
	snapshotKeys                  int
	etcdutl                       string
}

func main() {
	var o options
	flag.StringVar(&o.etcdBinary, "etcd", "/usr/bin/etcd", "etcd binary")
	flag.StringVar(&o.nodedBinary, "noded", "", "noded binary (default: go build ./cmd/noded)")
	flag.StringVar(&o.etcdEndpoints, "etcd-endpoints", "", "comma-separated client URLs of a running etcd to use instead of starting one")
	flag.StringVar(&o.nodedEndpoints, "noded-endpoints", "", "comma-separated client URLs of a running noded to use instead of starting one")
	flag.IntVar(&o.members, "members", 1, "members per side")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "time per row per side, split over -rounds")
	flag.Int64Var(&o.requests, "requests", 0, "requests per row per side, split over -rounds (overrides -duration)")
	flag.IntVar(&o.rounds, "rounds", 4, "alternations per row; the side that goes first alternates too")
	flag.IntVar(&o.conns, "conns", 10, "gRPC connections per side, shared by the clients")
	flag.IntVar(&o.valueSizeBytes, "value-size", 256, "bytes per value")
	flag.IntVar(&o.keys, "keys", 10000, "keys preloaded for the range rows")
	flag.StringVar(&o.rows, "rows", "put-1,put-100,range-l-100,range-s-100", "rows to run, comma-separated")
	flag.BoolVar(&o.jsonOut, "json", false, "print JSON instead of a table")
	flag.BoolVar(&o.keep, "keep", false, "keep the data directories and member logs")
	flag.IntVar(&o.snapshotKeys, "snapshot-keys", 0, "instead of the rows: load this many keys, then time snapshot save and restore on each side (snapshot.go)")
	flag.StringVar(&o.etcdutl, "etcdutl", filepath.Join(os.Getenv("NODED_ETCD37_DIR"), "etcdutl"), "etcdutl binary for the etcd side's restore (-snapshot-keys)")
	flag.Parse()
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "nodebench:", err)
		os.Exit(1)
	}
}

func run(o options, out io.Writer) error {
	rows, err := selectRows(o.rows)
	if err != nil {
		return err
	}
	if o.members < 1 || o.rounds < 1 || o.conns < 1 || o.keys < 1 || o.valueSizeBytes < 0 {
		return fmt.Errorf("-members, -rounds, -conns and -keys must be at least 1")
	}
	dir, err := os.MkdirTemp("", "nodebench-")
	if err != nil {
		return err
	}
	var sides []*side
	var cleanupOnce sync.Once
	cleanup := func() {
		cleanupOnce.Do(func() {
			for _, s := range sides {
				s.close()
			}
			if o.keep {
				fmt.Fprintln(os.Stderr, "nodebench: kept", dir)
			} else {
				os.RemoveAll(dir)
			}
		})
	}
	defer cleanup()
	// Interrupted: take the members down before going.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		cleanup()
		os.Exit(130)
	}()

	if o.nodedEndpoints == "" && o.nodedBinary == "" {
		// Not dir/noded: that is the noded side's cluster directory.
		o.nodedBinary = filepath.Join(dir, "noded-bin")
		progress("building ./cmd/noded")
		build := exec.Command("go", "build", "-o", o.nodedBinary, "github.com/noded/noded/cmd/noded")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/noded: %w", err)
		}
	}
	// etcd first in the slice: it is the reference each ratio divides by.
	for _, spec := range []struct{ label, binary, endpoints string }{
		{"etcd", o.etcdBinary, o.etcdEndpoints},
		{"noded", o.nodedBinary, o.nodedEndpoints},
	} {
		s := &side{label: spec.label, binary: spec.binary}
		if spec.endpoints != "" {
			s.endpoints = strings.Split(spec.endpoints, ",")
			s.binary = "(running at " + spec.endpoints + ")"
		} else {
			progress("starting %s: %d member(s) of %s", spec.label, o.members, spec.binary)
			c, err := startCluster(spec.label, spec.binary, filepath.Join(dir, spec.label), o.members)
			if err != nil {
				return err
			}
			s.cluster, s.endpoints = c, c.endpoints
		}
		sides = append(sides, s)
		if err := s.connect(o.conns); err != nil {
			return fmt.Errorf("%s: %w", spec.label, err)
		}
	}

	if o.snapshotKeys > 0 {
		return runSnapshotRows(o, dir, sides, out)
	}
	w := &workload{value: strings.Repeat("v", o.valueSizeBytes), rangeKeys: o.keys}
	perSlice := budget{duration: o.duration / time.Duration(o.rounds)}
	if o.requests > 0 {
		perSlice = budget{requests: max(1, o.requests/int64(o.rounds))}
	}
	var results []rowResult
	preloaded := false
	for _, row := range rows {
		if row.op != opPut && !preloaded {
			for _, s := range sides {
				progress("preloading %d keys into %s", o.keys, s.label)
				if err := w.preload(s); err != nil {
					return err
				}
			}
			preloaded = true
		}
		res := rowResult{row: row, samples: make([]sample, len(sides))}
		for round := 0; round < o.rounds; round++ {
			// ABBA: the side that runs first alternates each round.
			for k := range sides {
				i := k
				if round%2 == 1 {
					i = len(sides) - 1 - k
				}
				progress("%s: round %d/%d on %s", row.name, round+1, o.rounds, sides[i].label)
				res.samples[i].add(w.runSlice(sides[i], row, round, perSlice))
			}
		}
		for i := range res.samples {
			sortLatencies(&res.samples[i])
		}
		results = append(results, res)
	}

	if o.jsonOut {
		return writeJSON(out, o, sides, results)
	}
	writeTable(out, o, sides, results)
	return nil
}

type rowResult struct {
	row     rowSpec
	samples []sample // in the order of sides: etcd, noded
}

func selectRows(list string) ([]rowSpec, error) {
	var rows []rowSpec
	for _, id := range strings.Split(list, ",") {
		found := false
		for _, r := range allRows {
			if r.id == strings.TrimSpace(id) {
				rows, found = append(rows, r), true
			}
		}
		if !found {
			var ids []string
			for _, r := range allRows {
				ids = append(ids, r.id)
			}
			return nil, fmt.Errorf("unknown row %q (rows: %s)", id, strings.Join(ids, ","))
		}
	}
	return rows, nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "nodebench: "+format+"\n", args...)
}

func describe(o options, sides []*side) []string {
	budget := fmt.Sprintf("%v per row per side", o.duration)
	if o.requests > 0 {
		budget = fmt.Sprintf("%d requests per row per side", o.requests)
	}
	lines := []string{}
	for _, s := range sides {
		lines = append(lines, fmt.Sprintf("%s: %s (version %s), %d member(s)", s.label, s.binary, s.version, len(s.endpoints)))
	}
	lines = append(lines, fmt.Sprintf("%s in %d alternating rounds; %d connections per side; %d-byte values; %d preloaded keys for ranges; %d CPUs",
		budget, o.rounds, o.conns, o.valueSizeBytes, o.keys, runtime.NumCPU()))
	return lines
}

func writeTable(out io.Writer, o options, sides []*side, results []rowResult) {
	for _, line := range describe(o, sides) {
		fmt.Fprintln(out, line)
	}
	fmt.Fprintln(out)
	// A Markdown table: readable in a terminal, pastes into an issue.
	tw := tabwriter.NewWriter(out, 0, 0, 1, ' ', 0)
	header := []string{"workload", "etcd req/s", "noded req/s", "noded/etcd", "etcd p50 ms", "noded p50 ms", "noded/etcd", "etcd p99 ms", "noded p99 ms", "noded/etcd", "errors etcd/noded"}
	tableRow(tw, header)
	var rule []string
	for range header {
		rule = append(rule, "---")
	}
	tableRow(tw, rule)
	for _, r := range results {
		e, n := &r.samples[0], &r.samples[1]
		tableRow(tw, []string{
			r.row.name,
			fmt.Sprintf("%.0f", e.requestsPerSecond()), fmt.Sprintf("%.0f", n.requestsPerSecond()), ratio(n.requestsPerSecond(), e.requestsPerSecond()),
			fmt.Sprintf("%.2f", ms(e.percentile(0.50))), fmt.Sprintf("%.2f", ms(n.percentile(0.50))), ratio(ms(n.percentile(0.50)), ms(e.percentile(0.50))),
			fmt.Sprintf("%.2f", ms(e.percentile(0.99))), fmt.Sprintf("%.2f", ms(n.percentile(0.99))), ratio(ms(n.percentile(0.99)), ms(e.percentile(0.99))),
			fmt.Sprintf("%d/%d", e.errors, n.errors),
		})
	}
	tw.Flush()
	for _, r := range results {
		for i, s := range r.samples {
			if s.firstErr != nil {
				fmt.Fprintf(out, "%s on %s: first error: %v\n", r.row.name, sides[i].label, s.firstErr)
			}
		}
	}
}

type jsonSide struct {
	Requests          int64   `json:"requests"`
	Errors            int64   `json:"errors"`
	Seconds           float64 `json:"seconds"`
	RequestsPerSecond float64 `json:"requests_per_second"`
	P50Ms             float64 `json:"p50_ms"`
	P99Ms             float64 `json:"p99_ms"`
	FirstError        string  `json:"first_error,omitempty"`
}

type jsonRow struct {
	Workload string   `json:"workload"`
	Clients  int      `json:"clients"`
	Etcd     jsonSide `json:"etcd"`
	Noded    jsonSide `json:"noded"`
	// Ratios are noded over etcd.
	RatioRequestsPerSecond float64 `json:"ratio_requests_per_second"`
	RatioP50               float64 `json:"ratio_p50"`
	RatioP99               float64 `json:"ratio_p99"`
}

func tableRow(w io.Writer, cells []string) {
	fmt.Fprintf(w, "| %s\t|\n", strings.Join(cells, "\t| "))
}

func writeJSON(out io.Writer, o options, sides []*side, results []rowResult) error {
	toSide := func(s *sample) jsonSide {
		j := jsonSide{Requests: s.requests, Errors: s.errors, Seconds: s.elapsed.Seconds(),
			RequestsPerSecond: s.requestsPerSecond(), P50Ms: ms(s.percentile(0.50)), P99Ms: ms(s.percentile(0.99))}
		if s.firstErr != nil {
			j.FirstError = s.firstErr.Error()
		}
		return j
	}
	doc := struct {
		Setup []string  `json:"setup"`
		Rows  []jsonRow `json:"rows"`
	}{Setup: describe(o, sides)}
	for _, r := range results {
		e, n := toSide(&r.samples[0]), toSide(&r.samples[1])
		doc.Rows = append(doc.Rows, jsonRow{
			Workload: r.row.id, Clients: r.row.clients, Etcd: e, Noded: n,
			RatioRequestsPerSecond: safeDiv(n.RequestsPerSecond, e.RequestsPerSecond),
			RatioP50:               safeDiv(n.P50Ms, e.P50Ms),
			RatioP99:               safeDiv(n.P99Ms, e.P99Ms),
		})
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func safeDiv(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

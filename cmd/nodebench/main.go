// Command nodebench runs noded and etcd side by side on this machine and
// drives the same workloads against each in one run, alternating between
// them in short slices so both see the same machine load, then prints
// requests/s and p50/p99 latency for both and the noded/etcd ratio.
//
//	go run ./cmd/nodebench                          # noded built from ./cmd/noded vs /usr/bin/etcd
//	go run ./cmd/nodebench -members 3 -duration 20s
//	go run ./cmd/nodebench -noded /usr/bin/etcd     # etcd vs etcd: how noisy is this machine?
//	go run ./cmd/nodebench -noded-endpoints http://127.0.0.1:2379 -etcd-endpoints http://127.0.0.1:12379
//	go run ./cmd/nodebench -tls                     # each row also over https with client certificates
//	go run ./cmd/nodebench -flood -etcd /work/anchors/etcd  # idle-connection floods, a forged snapshot
//	go run ./cmd/nodebench -etcd /work/anchors/etcd -tool /work/anchors/benchmark  # the targets, with etcd's `benchmark`
//	go run ./cmd/nodebench -etcd $D/etcd -etcdutl $D/etcdutl -snapshot-keys 1000000 -value-size 100 -rounds 2
//
// Each side is started fresh (a single member, or -members N) on loopback
// with the same flags and data directories in one temporary directory, or
// is pointed at running endpoints. Rows: put with 1 and with 100 clients
// (unique keys, -value-size values), and linearizable and serializable
// single-key ranges with 100 clients over a preloaded keyspace of -keys
// keys. A client issues one request at a time; the clients share -conns
// gRPC connections per side. With -tls (or a row named <row>-tls) each
// side also serves an https client URL with the same throwaway
// certificates and client certificate authentication, and the table adds
// each side's TLS/plain ratios. -flood measures floods instead (flood.go).
// -tool runs the rows of the performance targets through etcd's own load
// tool instead, with resident memory and restart time (tool.go); -tool
// -floor runs them against a member that only answers (floor.go).
// Speed is only ever measured here, never asserted by a test.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
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
	tls                           bool
	flood                         bool
	floodClientConns              int
	floodPeerConns                int
	floodHold                     time.Duration
	floodSnapshotMiB              int
	// -tool: issue 13's rows through etcd's `benchmark` (tool.go).
	tool         string
	toolRows     string
	toolScale    float64
	pprofDir     string
	pprofSeconds int
	memoryKeys   int
	memorySettle time.Duration
	restartKeys  int
	nodedFlags   string
	floor        bool
	snapshotKeys int
	etcdutl      string
}

func main() {
	if isFloorMember() {
		if err := runFloorMember(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
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
	flag.StringVar(&o.rows, "rows", "put-1,put-100,range-l-100,range-s-100", "rows to run, comma-separated (each also as <row>-tls: over https with client certificates)")
	flag.BoolVar(&o.tls, "tls", false, "also run the TLS twin of every row (the cost of TLS, side by side)")
	flag.BoolVar(&o.flood, "flood", false, "instead of the rows, measure floods of idle connections and a forged snapshot (3 members a side)")
	flag.IntVar(&o.floodClientConns, "flood-client-conns", 5000, "-flood: idle connections on the client port")
	flag.IntVar(&o.floodPeerConns, "flood-peer-conns", 2000, "-flood: idle connections on each of two peer ports")
	flag.DurationVar(&o.floodHold, "flood-hold", 10*time.Second, "-flood: how long each phase runs")
	flag.IntVar(&o.floodSnapshotMiB, "flood-snapshot-mib", 160, "-flood: MiB of forged snapshot streamed at noded")
	flag.StringVar(&o.tool, "tool", "", "path of etcd's `benchmark` tool: run the rows of the performance targets with it (3 members a side, then 1) instead of nodebench's own workloads")
	flag.StringVar(&o.toolRows, "tool-rows", "all", "-tool: rows to run, comma-separated ("+strings.Join(toolRowIDs(), ",")+")")
	flag.Float64Var(&o.toolScale, "tool-scale", 1, "-tool: multiply every slice's --total by this")
	flag.StringVar(&o.pprofDir, "pprof", "", "-tool: start members with --enable-pprof and save a CPU profile of each side's leader per row in this directory")
	flag.IntVar(&o.pprofSeconds, "pprof-seconds", 5, "-pprof: seconds per profile")
	flag.IntVar(&o.memoryKeys, "memory-keys", 200000, "-tool memory row: keys written before compacting")
	flag.DurationVar(&o.memorySettle, "memory-settle", 40*time.Second, "-tool memory row: idle time after the compaction; resident memory is sampled over its last quarter")
	flag.IntVar(&o.restartKeys, "restart-keys", 1000000, "-tool restart row: keys the member holds when restarted")
	flag.BoolVar(&o.floor, "floor", false, "-tool: run the rows against a member that only answers (floor.go) instead of noded: the most any gRPC member reaches on this machine")
	flag.StringVar(&o.nodedFlags, "noded-flags", "", "-tool: extra flags for the noded members, space-separated (e.g. --lease-based-reads)")
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
	rows, err := selectRows(o.rows, o.tls)
	if err != nil {
		return err
	}
	if o.members < 1 || o.rounds < 1 || o.conns < 1 || o.keys < 1 || o.valueSizeBytes < 0 {
		return fmt.Errorf("-members, -rounds, -conns and -keys must be at least 1")
	}
	if o.flood {
		o.members = max(o.members, 3)
		rows = nil
	}
	dir, err := os.MkdirTemp("", "nodebench-")
	if err != nil {
		return err
	}
	var sides []*side
	var toolClusters []*cluster
	var toolMu sync.Mutex
	var cleanupOnce sync.Once
	cleanup := func() {
		cleanupOnce.Do(func() {
			for _, s := range sides {
				s.close()
			}
			toolMu.Lock()
			for _, c := range toolClusters {
				c.stop()
			}
			toolMu.Unlock()
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
	if o.tool != "" {
		return runTool(o, dir, out, func(c *cluster) {
			toolMu.Lock()
			defer toolMu.Unlock()
			toolClusters = append(toolClusters, c)
		})
	}
	var certs *benchTLS
	if slices.ContainsFunc(rows, func(r rowSpec) bool { return r.tls }) {
		if certs, err = newBenchTLS(dir); err != nil {
			return err
		}
	}
	// etcd first in the slice: it is the reference each ratio divides by.
	for _, spec := range []struct{ label, binary, endpoints string }{
		{"etcd", o.etcdBinary, o.etcdEndpoints},
		{"noded", o.nodedBinary, o.nodedEndpoints},
	} {
		s := &side{label: spec.label, binary: spec.binary}
		switch {
		case spec.endpoints != "" && certs != nil:
			return fmt.Errorf("TLS rows need clusters nodebench starts; %s is running at %s", spec.label, spec.endpoints)
		case spec.endpoints != "":
			s.endpoints = strings.Split(spec.endpoints, ",")
			s.binary = "(running at " + spec.endpoints + ")"
		default:
			progress("starting %s: %d member(s) of %s", spec.label, o.members, spec.binary)
			c, err := startCluster(spec.label, spec.binary, filepath.Join(dir, spec.label), o.members, certs)
			if err != nil {
				return err
			}
			s.cluster, s.endpoints, s.tlsEndpoints = c, c.endpoints, c.tlsEndpoints
		}
		sides = append(sides, s)
		var clientTLS *tls.Config
		if certs != nil {
			clientTLS = certs.client
		}
		if err := s.connect(o.conns, clientTLS); err != nil {
			return fmt.Errorf("%s: %w", spec.label, err)
		}
	}

	if o.flood {
		return runFloods(o, sides, out)
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

// selectRows picks the rows named in list, in order; withTLS adds the TLS
// twin after each plain row.
func selectRows(list string, withTLS bool) ([]rowSpec, error) {
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
	if withTLS {
		var twinned []rowSpec
		for _, r := range rows {
			twinned = append(twinned, r)
			if !r.tls {
				twin := r
				twin.id, twin.name, twin.tls = r.id+"-tls", r.name+", TLS", true
				if !slices.ContainsFunc(rows, func(o rowSpec) bool { return o.id == twin.id }) {
					twinned = append(twinned, twin)
				}
			}
		}
		rows = twinned
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
	tw := newTableWriter(out)
	tableHeader(tw, "workload", "etcd req/s", "noded req/s", "noded/etcd", "etcd p50 ms", "noded p50 ms", "noded/etcd", "etcd p99 ms", "noded p99 ms", "noded/etcd", "errors etcd/noded")
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
	if costs := tlsCosts(results); len(costs) > 0 {
		fmt.Fprintln(out)
		fmt.Fprintln(out, "The cost of TLS: each side's TLS row over its plain row, measured in the same run.")
		fmt.Fprintln(out)
		tw := tabwriter.NewWriter(out, 0, 0, 1, ' ', 0)
		tableHeader(tw, "workload", "etcd TLS/plain req/s", "noded TLS/plain req/s", "etcd TLS/plain p50", "noded TLS/plain p50", "noded/etcd req/s with TLS")
		for _, c := range costs {
			tableRow(tw, []string{c.workload, fmt.Sprintf("%.2fx", c.etcdRequests), fmt.Sprintf("%.2fx", c.nodedRequests),
				fmt.Sprintf("%.2fx", c.etcdP50), fmt.Sprintf("%.2fx", c.nodedP50), fmt.Sprintf("%.2fx", c.nodedOverEtcdTLS)})
		}
		tw.Flush()
	}
	for _, r := range results {
		for i, s := range r.samples {
			if s.firstErr != nil {
				fmt.Fprintf(out, "%s on %s: first error: %v\n", r.row.name, sides[i].label, s.firstErr)
			}
		}
	}
}

// tlsCost compares a row's TLS twin with the row, on each side.
type tlsCost struct {
	workload                    string
	etcdRequests, nodedRequests float64 // TLS req/s over plain req/s
	etcdP50, nodedP50           float64 // TLS p50 over plain p50
	nodedOverEtcdTLS            float64 // noded's TLS req/s over etcd's
}

// tlsCosts pairs every plain row with its TLS twin among results.
func tlsCosts(results []rowResult) []tlsCost {
	var out []tlsCost
	for _, plain := range results {
		if plain.row.tls {
			continue
		}
		for _, twin := range results {
			if !twin.row.tls || twin.row.id != plain.row.id+"-tls" {
				continue
			}
			pe, pn, te, tn := &plain.samples[0], &plain.samples[1], &twin.samples[0], &twin.samples[1]
			out = append(out, tlsCost{
				workload:         plain.row.name,
				etcdRequests:     safeDiv(te.requestsPerSecond(), pe.requestsPerSecond()),
				nodedRequests:    safeDiv(tn.requestsPerSecond(), pn.requestsPerSecond()),
				etcdP50:          safeDiv(ms(te.percentile(0.5)), ms(pe.percentile(0.5))),
				nodedP50:         safeDiv(ms(tn.percentile(0.5)), ms(pn.percentile(0.5))),
				nodedOverEtcdTLS: safeDiv(tn.requestsPerSecond(), te.requestsPerSecond()),
			})
		}
	}
	return out
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

func newTableWriter(out io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(out, 0, 0, 1, ' ', 0)
}

func tableRow(w io.Writer, cells []string) {
	fmt.Fprintf(w, "| %s\t|\n", strings.Join(cells, "\t| "))
}

// tableHeader writes a Markdown table's header row and its rule.
func tableHeader(w io.Writer, cells ...string) {
	tableRow(w, cells)
	rule := make([]string, len(cells))
	for i := range rule {
		rule[i] = "---"
	}
	tableRow(w, rule)
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
	type jsonTLSCost struct {
		Workload             string  `json:"workload"`
		EtcdRequestsRatio    float64 `json:"etcd_tls_over_plain_requests_per_second"`
		NodedRequestsRatio   float64 `json:"noded_tls_over_plain_requests_per_second"`
		EtcdP50Ratio         float64 `json:"etcd_tls_over_plain_p50"`
		NodedP50Ratio        float64 `json:"noded_tls_over_plain_p50"`
		NodedOverEtcdWithTLS float64 `json:"noded_over_etcd_requests_per_second_with_tls"`
	}
	doc := struct {
		Setup   []string      `json:"setup"`
		Rows    []jsonRow     `json:"rows"`
		TLSCost []jsonTLSCost `json:"tls_cost,omitempty"`
	}{Setup: describe(o, sides)}
	for _, c := range tlsCosts(results) {
		doc.TLSCost = append(doc.TLSCost, jsonTLSCost{c.workload, c.etcdRequests, c.nodedRequests, c.etcdP50, c.nodedP50, c.nodedOverEtcdTLS})
	}
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

package main

// -tool: the rows of issue 13's targets, each driven by etcd's own load
// tool (`benchmark`, built by the anchors script) against a noded cluster
// and an etcd cluster started side by side. A row runs in -rounds slices
// per side, alternating ABBA, so both see the same machine load; a slice is
// one `benchmark` process with a fixed --total, and its report is parsed.
// A row's requests/s is all its slices' requests over all their seconds;
// its latencies are the mean of the slices' percentiles (the tool reports
// percentiles, not samples). The spread of the per-round ratios says how
// noisy the machine was.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// toolRangeKey is the key the range rows read (etcd's performance guide
// ranges one key); it is written before the first range slice.
const toolRangeKey = "bench-range-key"

// toolSliceTimeout bounds one `benchmark` process.
const toolSliceTimeout = 10 * time.Minute

// toolMetric says which figures of a report a row compares.
type toolMetric int

const (
	// metricThroughput compares requests/s and p99 of the report's one
	// summary.
	metricThroughput toolMetric = iota
	// metricWatchLatency compares the "Watch events summary" latency
	// (put acknowledged to event received) of watch-latency.
	metricWatchLatency
	// metricWatchFanout compares watch creation latency and the rate of
	// events received of `benchmark watch`.
	metricWatchFanout
)

type toolRow struct {
	id, name string
	members  int
	metric   toolMetric
	target   string
	// totalPerSlice is the --total (or --put-total) of one slice, before
	// -tool-scale.
	totalPerSlice int
	// args is the benchmark command line after the global flags.
	args func(total int) []string
}

func putArgs(clients, conns, total int) []string {
	return []string{"put", "--clients", strconv.Itoa(clients), "--conns", strconv.Itoa(conns),
		"--key-size", "8", "--sequential-keys", "--key-space-size", "100000", "--val-size", "256",
		"--total", strconv.Itoa(total)}
}

var toolRows = []toolRow{
	{id: "put-1", name: "put, 1 client", members: 3, target: ">= 2x", totalPerSlice: 2000,
		args: func(n int) []string { return putArgs(1, 1, n) }},
	{id: "put-100", name: "put, 100 clients (10 conns)", members: 3, target: ">= 2x", totalPerSlice: 20000,
		args: func(n int) []string { return putArgs(100, 10, n) }},
	{id: "put-1000", name: "put, 1000 clients (100 conns)", members: 3, target: ">= 2x", totalPerSlice: 20000,
		args: func(n int) []string { return putArgs(1000, 100, n) }},
	{id: "range-l-100", name: "range linearizable, 100 clients", members: 3, target: ">= 2x", totalPerSlice: 20000,
		args: func(n int) []string {
			return []string{"range", toolRangeKey, "--consistency", "l", "--clients", "100", "--conns", "10", "--total", strconv.Itoa(n)}
		}},
	{id: "range-s-100", name: "range serializable, 100 clients", members: 3, target: ">= 2x", totalPerSlice: 40000,
		args: func(n int) []string {
			return []string{"range", toolRangeKey, "--consistency", "s", "--clients", "100", "--conns", "10", "--total", strconv.Itoa(n)}
		}},
	{id: "txn-put-100", name: "txn-put, 100 clients", members: 3, target: ">= 2x", totalPerSlice: 20000,
		args: func(n int) []string {
			return []string{"txn-put", "--clients", "100", "--conns", "10", "--key-size", "8", "--key-space-size", "100000",
				"--val-size", "256", "--total", strconv.Itoa(n)}
		}},
	{id: "lease-keepalive-100", name: "lease keepalive, 100 clients", members: 3, target: ">= 2x", totalPerSlice: 20000,
		args: func(n int) []string {
			return []string{"lease-keepalive", "--clients", "100", "--conns", "10", "--total", strconv.Itoa(n)}
		}},
	{id: "stm", name: "stm, 2 keys per txn of 1000, 100 clients", members: 3, target: ">= 2x", totalPerSlice: 5000,
		args: func(n int) []string {
			return []string{"stm", "--clients", "100", "--conns", "10", "--keys", "1000", "--keys-per-txn", "2",
				"--val-size", "256", "--total", strconv.Itoa(n)}
		}},
	{id: "watch-latency", name: "watch-latency (100 watchers, 100 puts/s)", members: 3, metric: metricWatchLatency,
		target: "latency <= 0.5x", totalPerSlice: 300,
		args: func(n int) []string {
			return []string{"watch-latency", "--streams", "10", "--watchers-per-stream", "10", "--put-rate", "100",
				"--val-size", "256", "--put-total", strconv.Itoa(n)}
		}},
	{id: "watch", name: "watch (100 watchers per stream on one key, 1000 streams)", members: 3, metric: metricWatchFanout,
		target: "latency <= 0.5x (events/s; p99 of creation)", totalPerSlice: 20,
		args: func(n int) []string {
			return []string{"watch", "--clients", "100", "--conns", "100", "--streams", "1000", "--watch-per-stream", "100",
				"--watched-key-total", "1", "--put-total", strconv.Itoa(n)}
		}},
	{id: "put-100-one-member", name: "one member: put, 100 clients (10 conns)", members: 1, target: ">= 2x", totalPerSlice: 20000,
		args: func(n int) []string { return putArgs(100, 10, n) }},
}

// The one-member rows that are not a `benchmark` command but a procedure:
// resident memory after writing and compacting, and restart time.
const (
	toolRowMemory  = "memory"
	toolRowRestart = "restart"
)

func toolRowIDs() []string {
	var ids []string
	for _, r := range toolRows {
		ids = append(ids, r.id)
	}
	return append(ids, toolRowMemory, toolRowRestart)
}

// toolReport is one section of a `benchmark` report.
type toolReport struct {
	totalSeconds, averageSeconds, requestsPerSecond float64
	percentiles                                     map[string]float64 // "99" -> seconds
	errors                                          int64
}

// parseToolOutput splits a `benchmark` report into its summaries, keyed by
// the line that introduces each ("Summary", "Watch creation summary", ...).
func parseToolOutput(out []byte) (map[string]*toolReport, error) {
	reports := map[string]*toolReport{}
	var cur *toolReport
	inErrors := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	secs := func(s string) float64 {
		s = strings.TrimSuffix(strings.TrimSpace(s), ".")
		s = strings.TrimSpace(strings.TrimSuffix(s, "secs"))
		f, _ := strconv.ParseFloat(s, 64)
		return f
	}
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasSuffix(strings.ToLower(trimmed), "summary:") {
			if trimmed == "Summary:" && cur != nil && cur.totalSeconds == 0 && cur.requestsPerSecond == 0 {
				// watch-latency and watch title a report, then the
				// report says "Summary:" itself.
				continue
			}
			cur = &toolReport{percentiles: map[string]float64{}}
			reports[strings.TrimSuffix(trimmed, ":")] = cur
			inErrors = false
			continue
		}
		if cur == nil {
			continue
		}
		switch {
		case strings.HasPrefix(trimmed, "Total:"):
			cur.totalSeconds = secs(strings.TrimPrefix(trimmed, "Total:"))
		case strings.HasPrefix(trimmed, "Average:"):
			cur.averageSeconds = secs(strings.TrimPrefix(trimmed, "Average:"))
		case strings.HasPrefix(trimmed, "Requests/sec:"):
			cur.requestsPerSecond, _ = strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(trimmed, "Requests/sec:")), 64)
		case strings.HasPrefix(trimmed, "Error distribution:"):
			inErrors = true
		case inErrors && strings.HasPrefix(trimmed, "["):
			if end := strings.Index(trimmed, "]"); end > 0 {
				n, _ := strconv.ParseInt(trimmed[1:end], 10, 64)
				cur.errors += n
			}
		case strings.Contains(trimmed, "% in "):
			pct, rest, _ := strings.Cut(trimmed, "% in ")
			cur.percentiles[pct] = secs(rest)
		}
	}
	if len(reports) == 0 {
		return nil, fmt.Errorf("no summary in the benchmark output")
	}
	return reports, nil
}

// toolSlice is what one slice measured on one side.
type toolSlice struct {
	requests      float64 // requests (or events) the rate counts
	seconds       float64
	p50, p99, avg float64 // seconds
	errors        int64
	rate          float64 // requests (or events) per second
	raw           string  // the tool's output, kept for the first error
	failed        error
	// memberCPU is the CPU time (user and system) the side's members
	// spent during the slice, in seconds, and toolCPU the `benchmark`
	// process's: CPU per request is what a shared machine's load changes
	// least.
	memberCPU, toolCPU float64
}

func sliceFrom(metric toolMetric, reports map[string]*toolReport) (toolSlice, error) {
	pick := func(name string) (*toolReport, error) {
		for k, r := range reports {
			if strings.EqualFold(k, name) {
				return r, nil
			}
		}
		var have []string
		for k := range reports {
			have = append(have, k)
		}
		slices.Sort(have)
		return nil, fmt.Errorf("no %q in the report (have %s)", name, strings.Join(have, ", "))
	}
	var s toolSlice
	switch metric {
	case metricThroughput:
		r, err := pick("Summary")
		if err != nil {
			return s, err
		}
		s = toolSlice{requests: r.requestsPerSecond * r.totalSeconds, seconds: r.totalSeconds, rate: r.requestsPerSecond,
			p50: r.percentiles["50"], p99: r.percentiles["99"], avg: r.averageSeconds, errors: r.errors}
	case metricWatchLatency:
		r, err := pick("Watch events summary")
		if err != nil {
			return s, err
		}
		s = toolSlice{requests: r.requestsPerSecond * r.totalSeconds, seconds: r.totalSeconds, rate: r.requestsPerSecond,
			p50: r.percentiles["50"], p99: r.percentiles["99"], avg: r.averageSeconds, errors: r.errors}
	case metricWatchFanout:
		created, err := pick("Watch creation summary")
		if err != nil {
			return s, err
		}
		received, err := pick("Watch events received summary")
		if err != nil {
			return s, err
		}
		// Latency is the creation's; the rate is events delivered per
		// second (the tool times each event from its own receipt, so
		// its latencies say nothing).
		s = toolSlice{requests: received.requestsPerSecond * received.totalSeconds, seconds: received.totalSeconds,
			rate: received.requestsPerSecond, p50: created.percentiles["50"], p99: created.percentiles["99"],
			avg: created.averageSeconds, errors: created.errors + received.errors}
	}
	return s, nil
}

// toolSide is one system under test in -tool mode.
type toolSide struct {
	label     string
	binary    string
	cluster   *cluster
	client    *clientv3.Client
	version   string
	profileOn bool // -pprof: this side serves /debug/pprof
}

func (s *toolSide) close() {
	if s.client != nil {
		s.client.Close()
	}
	if s.cluster != nil {
		s.cluster.stop()
	}
}

func startToolSide(label, binary, dir string, members int, extraArgs []string, track func(*cluster)) (*toolSide, error) {
	progress("starting %s: %d member(s) of %s", label, members, binary)
	c, err := startClusterWith(label, binary, dir, members, nil, extraArgs)
	if c != nil {
		track(c)
	}
	if err != nil {
		return nil, err
	}
	s := &toolSide{label: label, binary: binary, cluster: c}
	s.client, err = clientv3.New(clientv3.Config{Endpoints: c.endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	ctx, cancel := newRequestContext()
	defer cancel()
	st, err := s.client.Status(ctx, c.endpoints[0])
	if err != nil {
		return nil, fmt.Errorf("%s: status: %w", label, err)
	}
	s.version = st.Version
	return s, nil
}

// leaderEndpoint is the client URL of the side's leader (the member a
// profile of the write path is worth taking from).
func (s *toolSide) leaderEndpoint() string {
	for _, ep := range s.cluster.endpoints {
		ctx, cancel := newRequestContext()
		st, err := s.client.Status(ctx, ep)
		cancel()
		if err == nil && st.Leader == st.Header.GetMemberId() {
			return ep
		}
	}
	return s.cluster.endpoints[0]
}

// runToolSlice runs one `benchmark` process against side s.
func runToolSlice(o options, s *toolSide, row toolRow, total int, profilePath string) toolSlice {
	args := append([]string{"--endpoints", strings.Join(s.cluster.endpoints, ",")}, row.args(total)...)
	ctx, cancel := context.WithTimeout(context.Background(), toolSliceTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.tool, args...)
	cmd.Env = os.Environ()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var profileDone chan error
	if profilePath != "" && s.profileOn {
		profileDone = make(chan error, 1)
		ep := s.leaderEndpoint()
		go func() { profileDone <- fetchCPUProfile(ep, profilePath, o.pprofSeconds) }()
	}
	cpuBefore := s.cluster.cpuSeconds()
	err := cmd.Run()
	memberCPU := s.cluster.cpuSeconds() - cpuBefore
	var toolCPU float64
	if cmd.ProcessState != nil {
		toolCPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	if profileDone != nil {
		if perr := <-profileDone; perr != nil {
			progress("profile of %s on %s: %v", row.id, s.label, perr)
		}
	}
	if err != nil {
		return toolSlice{failed: fmt.Errorf("benchmark %s: %w: %s", strings.Join(args, " "), err, lastLines(stderr.String(), 5))}
	}
	reports, err := parseToolOutput(stdout.Bytes())
	if err == nil {
		var sl toolSlice
		sl, err = sliceFrom(row.metric, reports)
		if err == nil {
			sl.raw = stdout.String()
			sl.memberCPU, sl.toolCPU = memberCPU, toolCPU
			return sl
		}
	}
	return toolSlice{failed: fmt.Errorf("benchmark %s: %w: %s", strings.Join(args, " "), err, lastLines(stdout.String(), 10))}
}

// fetchCPUProfile saves a CPU profile of seconds from the member at
// endpoint (noded's and etcd's --enable-pprof) to path.
func fetchCPUProfile(endpoint, path string, seconds int) error {
	client := &http.Client{Timeout: time.Duration(seconds+30) * time.Second}
	resp, err := client.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", endpoint, seconds))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", endpoint, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// toolResult is a row's outcome on both sides (index 0 etcd, 1 noded).
type toolResult struct {
	row    toolRow
	slices [2][]toolSlice
	// memory and restart rows fill these instead.
	custom     *customResult
	skipReason string
}

type customResult struct {
	name, target, unit string
	values             [2][]float64 // per measurement, per side
	note               string
}

func (r *toolResult) rate(side int) float64 {
	var req, sec float64
	for _, s := range r.slices[side] {
		req += s.requests
		sec += s.seconds
	}
	if sec == 0 {
		return 0
	}
	return req / sec
}

// cpuPerRequest is the members' CPU microseconds per request (or event)
// over all the side's slices.
func (r *toolResult) cpuPerRequest(side int) float64 {
	return r.microsPerRequest(side, func(s toolSlice) float64 { return s.memberCPU })
}

// toolCPUPerRequest is the `benchmark` process's CPU microseconds per
// request over all the side's slices: the load generator's share of the
// machine, which no server can make smaller.
func (r *toolResult) toolCPUPerRequest(side int) float64 {
	return r.microsPerRequest(side, func(s toolSlice) float64 { return s.toolCPU })
}

// microsPerRequest sums seconds over the side's sound slices and divides
// by their requests, in microseconds.
func (r *toolResult) microsPerRequest(side int, seconds func(toolSlice) float64) float64 {
	var sum, req float64
	for _, s := range r.slices[side] {
		if s.failed == nil {
			sum += seconds(s)
			req += s.requests
		}
	}
	if req == 0 {
		return 0
	}
	return 1e6 * sum / req
}

func (r *toolResult) meanOf(side int, f func(toolSlice) float64) float64 {
	var sum float64
	n := 0
	for _, s := range r.slices[side] {
		if s.failed == nil {
			sum += f(s)
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// roundRatios are noded over etcd per round, of the row's main figure: the
// rate for throughput rows, the mean latency for latency rows.
func (r *toolResult) roundRatios() []float64 {
	var out []float64
	for i := range min(len(r.slices[0]), len(r.slices[1])) {
		e, n := r.slices[0][i], r.slices[1][i]
		if e.failed != nil || n.failed != nil {
			continue
		}
		if r.row.metric == metricWatchLatency {
			out = append(out, safeDiv(n.avg, e.avg))
		} else {
			out = append(out, safeDiv(n.rate, e.rate))
		}
	}
	return out
}

func spread(ratios []float64) string {
	if len(ratios) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f-%.2f", slices.Min(ratios), slices.Max(ratios))
}

// runTool runs the -tool rows. track registers every started cluster for
// the interrupt handler.
func runTool(o options, dir string, out io.Writer, track func(*cluster)) error {
	if _, err := os.Stat(o.tool); err != nil {
		return fmt.Errorf("-tool: %w (build it with ../shared/tools/etcd-anchors.sh DIR)", err)
	}
	want := strings.Split(o.toolRows, ",")
	if o.toolRows == "" || o.toolRows == "all" {
		want = toolRowIDs()
	}
	for _, id := range want {
		if !slices.Contains(toolRowIDs(), id) {
			return fmt.Errorf("unknown -tool-rows row %q (rows: %s)", id, strings.Join(toolRowIDs(), ","))
		}
	}
	var extraArgs []string
	if o.pprofDir != "" {
		if err := os.MkdirAll(o.pprofDir, 0o755); err != nil {
			return err
		}
		extraArgs = append(extraArgs, "--enable-pprof")
	}
	binaries := [2][2]string{{"etcd", o.etcdBinary}, {"noded", o.nodedBinary}}
	if o.floor {
		// The floor has no store to measure memory or restarts of, and
		// no watches.
		want = slices.DeleteFunc(want, func(id string) bool {
			return id == toolRowMemory || id == toolRowRestart || strings.HasPrefix(id, "watch")
		})
		link, err := floorBinary(dir)
		if err != nil {
			return err
		}
		binaries[1] = [2]string{"floor", link}
	}
	var results []toolResult
	var setup []string
	for _, members := range []int{3, 1} {
		var rows []toolRow
		for _, r := range toolRows {
			if r.members == members && slices.Contains(want, r.id) {
				rows = append(rows, r)
			}
		}
		custom := members == 1 && (slices.Contains(want, toolRowMemory) || slices.Contains(want, toolRowRestart))
		if len(rows) == 0 && !custom {
			continue
		}
		var sides [2]*toolSide
		for i, b := range binaries {
			args := extraArgs
			if b[0] != "etcd" {
				args = append(slices.Clone(extraArgs), strings.Fields(o.nodedFlags)...)
			}
			s, err := startToolSide(b[0], b[1], filepath.Join(dir, fmt.Sprintf("%s-%d", b[0], members)), members, args, track)
			if err != nil {
				for _, s := range sides {
					if s != nil {
						s.close()
					}
				}
				return err
			}
			s.profileOn = o.pprofDir != ""
			sides[i] = s
		}
		for _, s := range sides {
			setup = append(setup, fmt.Sprintf("%s: %s (version %s), %d member(s)", s.label, s.binary, s.version, members))
		}
		if members == 1 && slices.Contains(want, toolRowMemory) {
			// Memory first: the rows after it write more keys.
			res, err := measureMemory(o, sides)
			if err != nil {
				return err
			}
			results = append(results, res)
		}
		for _, row := range rows {
			results = append(results, runToolRow(o, sides, row))
		}
		if members == 1 && slices.Contains(want, toolRowRestart) {
			res, err := measureRestart(o, sides)
			if err != nil {
				return err
			}
			results = append(results, res)
		}
		for _, s := range sides {
			s.close()
		}
	}
	if o.nodedFlags != "" {
		setup = append(setup, "noded members started with "+o.nodedFlags)
	}
	setup = append(setup, fmt.Sprintf("each row: %d rounds of one `%s` process per side, alternating ABBA; -tool-scale %g; %d CPUs",
		o.rounds, filepath.Base(o.tool), o.toolScale, numCPU()))
	if o.floor {
		setup = append(setup, "floor: a member that answers every call at once with an empty success (no raft, log or store): the most any member speaking gRPC reaches on this machine")
	}
	writeToolTable(out, setup, results, binaries[1][0])
	return nil
}

func runToolRow(o options, sides [2]*toolSide, row toolRow) toolResult {
	res := toolResult{row: row}
	total := max(1, int(float64(row.totalPerSlice)*o.toolScale))
	if strings.HasPrefix(row.id, "range-") {
		for _, s := range sides {
			ctx, cancel := newRequestContext()
			_, err := s.client.Put(ctx, toolRangeKey, strings.Repeat("v", 256))
			cancel()
			if err != nil {
				res.skipReason = fmt.Sprintf("writing the range key on %s: %v", s.label, err)
				return res
			}
		}
	}
	for round := 0; round < o.rounds; round++ {
		order := []int{0, 1}
		if round%2 == 1 {
			order = []int{1, 0}
		}
		for _, i := range order {
			progress("%s: round %d/%d on %s", row.id, round+1, o.rounds, sides[i].label)
			profile := ""
			// One profile per row and side, from the second round (the
			// first warms up).
			if o.pprofDir != "" && round == min(1, o.rounds-1) {
				profile = filepath.Join(o.pprofDir, fmt.Sprintf("%s.%s.pprof", row.id, sides[i].label))
			}
			res.slices[i] = append(res.slices[i], runToolSlice(o, sides[i], row, total, profile))
		}
	}
	return res
}

// writeToolTable prints the table; second is the label of the side
// compared with etcd (noded, or the floor).
func writeToolTable(out io.Writer, setup []string, results []toolResult, second string) {
	for _, line := range setup {
		fmt.Fprintln(out, line)
	}
	fmt.Fprintln(out)
	tw := newTableWriter(out)
	tableHeader(tw, "workload", "target", "etcd", second, second+"/etcd", "per-round ratios", "etcd p99 ms", second+" p99 ms", "p99 "+second+"/etcd",
		"member CPU us/req etcd", second, second+"/etcd", "errors etcd/"+second)
	for _, r := range results {
		if r.custom != nil {
			c := r.custom
			e, n := meanFloat(c.values[0]), meanFloat(c.values[1])
			var ratios []float64
			for i := range min(len(c.values[0]), len(c.values[1])) {
				ratios = append(ratios, safeDiv(c.values[1][i], c.values[0][i]))
			}
			tableRow(tw, []string{c.name, c.target, fmt.Sprintf("%.1f %s", e, c.unit), fmt.Sprintf("%.1f %s", n, c.unit),
				ratio(n, e), spread(ratios), "", "", "", "", "", "", ""})
			continue
		}
		if r.skipReason != "" {
			tableRow(tw, []string{r.row.name, r.row.target, "-", "-", "-", "-", "", "", "", "", "", "", r.skipReason})
			continue
		}
		var errs [2]int64
		for i := range 2 {
			for _, s := range r.slices[i] {
				errs[i] += s.errors
				if s.failed != nil {
					errs[i]++
				}
			}
		}
		p99 := func(i int) float64 { return 1000 * r.meanOf(i, func(s toolSlice) float64 { return s.p99 }) }
		var main [2]string
		var mainRatio string
		switch r.row.metric {
		case metricWatchLatency:
			for i := range 2 {
				main[i] = fmt.Sprintf("%.2f ms avg", 1000*r.meanOf(i, func(s toolSlice) float64 { return s.avg }))
			}
			mainRatio = ratio(r.meanOf(1, func(s toolSlice) float64 { return s.avg }), r.meanOf(0, func(s toolSlice) float64 { return s.avg }))
		case metricWatchFanout:
			for i := range 2 {
				main[i] = fmt.Sprintf("%.0f events/s", r.rate(i))
			}
			mainRatio = ratio(r.rate(1), r.rate(0))
		default:
			for i := range 2 {
				main[i] = fmt.Sprintf("%.0f req/s", r.rate(i))
			}
			mainRatio = ratio(r.rate(1), r.rate(0))
		}
		tableRow(tw, []string{r.row.name, r.row.target, main[0], main[1], mainRatio, spread(r.roundRatios()),
			fmt.Sprintf("%.2f", p99(0)), fmt.Sprintf("%.2f", p99(1)), ratio(p99(1), p99(0)),
			fmt.Sprintf("%.0f", r.cpuPerRequest(0)), fmt.Sprintf("%.0f", r.cpuPerRequest(1)), ratio(r.cpuPerRequest(1), r.cpuPerRequest(0)),
			fmt.Sprintf("%d/%d", errs[0], errs[1])})
	}
	tw.Flush()
	fmt.Fprintln(out)
	fmt.Fprintf(out, "benchmark's own CPU us/req (etcd/%s):", second)
	for _, r := range results {
		if r.custom == nil && r.skipReason == "" {
			fmt.Fprintf(out, " %s %.0f/%.0f;", r.row.id, r.toolCPUPerRequest(0), r.toolCPUPerRequest(1))
		}
	}
	fmt.Fprintln(out)
	for _, r := range results {
		if r.custom != nil && r.custom.note != "" {
			fmt.Fprintf(out, "%s: %s\n", r.custom.name, r.custom.note)
		}
		for i, label := range []string{"etcd", second} {
			for _, s := range r.slices[i] {
				if s.failed != nil {
					fmt.Fprintf(out, "%s on %s: %v\n", r.row.id, label, s.failed)
					break
				}
			}
		}
	}
}

func meanFloat(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

package server

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// scrapedSample is one line of a /metrics scrape.
type scrapedSample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape reads a member's /metrics in Prometheus text format.
func scrape(t *testing.T, clientURL string) []scrapedSample {
	t.Helper()
	resp, err := http.Get(clientURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out []scrapedSample
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			t.Fatalf("GET /metrics: %v", err)
		}
		out = append(out, s)
	}
	return out
}

var sampleLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

func parseSample(line string) (scrapedSample, error) {
	s := scrapedSample{labels: map[string]string{}}
	rest := line
	if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
		end := strings.LastIndex(line, "}")
		if end < i {
			return s, fmt.Errorf("line %q: unclosed labels", line)
		}
		s.name = line[:i]
		for _, m := range sampleLabel.FindAllStringSubmatch(line[i+1:end], -1) {
			s.labels[m[1]] = m[2]
		}
		rest = line[end+1:]
	} else {
		name, r, _ := strings.Cut(line, " ")
		s.name, rest = name, " "+r
	}
	v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
	if err != nil {
		return s, fmt.Errorf("line %q: value: %v", line, err)
	}
	s.value = v
	return s, nil
}

// mixinSelector is one `metric{matchers}` of a query in the fixture.
type mixinSelector struct {
	query    string
	metric   string
	equalTo  map[string]string // label="value" matchers, besides the job and cluster ones
	extended bool              // from the [alerts] section
}

var selectorRE = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}`)
var equalMatcherRE = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"([^"]*)"\s*$`)

// readMixinSelectors reads every metric selector of the fixture's queries.
func readMixinSelectors(t *testing.T) []mixinSelector {
	t.Helper()
	f, err := os.Open("testdata/etcd-mixin-queries.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []mixinSelector
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "["):
			section = line
			continue
		}
		for _, m := range selectorRE.FindAllStringSubmatch(line, -1) {
			if m[1] == "up" {
				continue // Prometheus's own series for the scrape target
			}
			sel := mixinSelector{query: line, metric: m[1], equalTo: map[string]string{}, extended: section == "[alerts]"}
			for _, matcher := range strings.Split(m[2], ",") {
				if em := equalMatcherRE.FindStringSubmatch(matcher); em != nil && em[1] != "job" && em[1] != "cluster" {
					sel.equalTo[em[1]] = em[2]
				}
			}
			out = append(out, sel)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func (sel mixinSelector) matchedBy(samples []scrapedSample) bool {
	for _, s := range samples {
		if s.name != sel.metric {
			continue
		}
		all := true
		for k, v := range sel.equalTo {
			if s.labels[k] != v {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// TestEtcdMixinMetricsExported runs a three-member cluster, one member with
// --metrics=extensive, sends it the traffic the dashboard plots (puts, a
// watch stream, a lease keepalive stream), and checks that every selector
// of every query in etcd's dashboard and alert rules finds a series: the
// dashboard's on the members with the default level alone, the alerts' on
// the cluster.
func TestEtcdMixinMetricsExported(t *testing.T) {
	tms := newTestConfigs(t, 3)
	tms[0].cfg.Metrics = MetricsExtensive
	for _, tm := range tms {
		tm.start(t)
	}
	waitLeader(t, tms)
	ctx := testContext(t)
	for _, tm := range tms {
		c := newClient(t, tm)
		for i := range 5 {
			if _, err := c.Put(ctx, fmt.Sprintf("k%d", i), "v"); err != nil {
				t.Fatal(err)
			}
		}
		wch := c.Watch(ctx, "k9")
		if _, err := c.Put(ctx, "k9", "v"); err != nil {
			t.Fatal(err)
		}
		<-wch
		lease, err := c.Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.KeepAliveOnce(ctx, lease.ID); err != nil {
			t.Fatal(err)
		}
	}
	selectors := readMixinSelectors(t)
	if len(selectors) < 30 {
		t.Fatalf("fixture: %d selectors read; the file is not what this test expects", len(selectors))
	}
	var scrapes [][]scrapedSample
	// Peer round trips are timed from the leader's heartbeats: wait until
	// one is answered.
	waitFor(t, "every selector of the dashboard and the alerts to match", func() bool {
		scrapes = scrapes[:0]
		var all []scrapedSample
		for _, tm := range tms {
			s := scrape(t, tm.clientURL)
			scrapes = append(scrapes, s)
			all = append(all, s...)
		}
		for _, sel := range selectors {
			if !sel.matchedBy(all) {
				return false
			}
		}
		return true
	})
	for _, sel := range selectors {
		if sel.extended {
			continue
		}
		// The dashboard works on the default level alone.
		var basic []scrapedSample
		basic = append(basic, scrapes[1]...)
		basic = append(basic, scrapes[2]...)
		if !sel.matchedBy(basic) && sel.metric != "etcd_network_peer_round_trip_time_seconds_bucket" {
			t.Errorf("with --metrics=basic, %s%v (from %q) has no series", sel.metric, sel.equalTo, sel.query)
		}
	}
	hasHandling := func(samples []scrapedSample) bool {
		for _, s := range samples {
			if s.name == "grpc_server_handling_seconds_bucket" {
				return true
			}
		}
		return false
	}
	if hasHandling(scrapes[1]) || !hasHandling(scrapes[0]) {
		t.Errorf("grpc_server_handling_seconds: basic member has it %v, extensive member has it %v; want false, true", hasHandling(scrapes[1]), hasHandling(scrapes[0]))
	}
	// The counters count: every member served the puts above.
	for i, samples := range scrapes {
		for _, name := range []string{"etcd_mvcc_put_total", "etcd_network_client_grpc_received_bytes_total", "etcd_network_client_grpc_sent_bytes_total", "process_resident_memory_bytes", "go_goroutines"} {
			found := false
			for _, s := range samples {
				if s.name == name {
					found = true
					if s.value <= 0 {
						t.Errorf("member %d: %s = %v, want > 0", i, name, s.value)
					}
				}
			}
			if !found {
				t.Errorf("member %d: no %s", i, name)
			}
		}
	}
}

// TestMixinSelectorsCatchAMissingMetric proves the check above can fail: a
// selector whose metric or label value no sample has is unmatched.
func TestMixinSelectorsCatchAMissingMetric(t *testing.T) {
	samples := []scrapedSample{{name: "grpc_server_started_total", labels: map[string]string{"grpc_service": "etcdserverpb.KV", "grpc_type": "unary"}}}
	for _, tc := range []struct {
		sel  mixinSelector
		want bool
	}{
		{mixinSelector{metric: "grpc_server_started_total", equalTo: map[string]string{"grpc_type": "unary"}}, true},
		{mixinSelector{metric: "grpc_server_started_total", equalTo: map[string]string{"grpc_service": "etcdserverpb.Watch"}}, false},
		{mixinSelector{metric: "etcd_server_has_leader", equalTo: map[string]string{}}, false},
	} {
		if got := tc.sel.matchedBy(samples); got != tc.want {
			t.Errorf("%s%v matched = %v, want %v", tc.sel.metric, tc.sel.equalTo, got, tc.want)
		}
	}
}

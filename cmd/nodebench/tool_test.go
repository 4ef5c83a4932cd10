package main

import (
	"strings"
	"testing"
)

// A report of `benchmark put` and one of `benchmark watch-latency` as the
// tool prints them (histograms shortened).
const putOutput = `
Summary:
  Total:	2.5000 secs.
  Slowest:	0.0500 secs.
  Fastest:	0.0010 secs.
  Average:	0.0100 secs.
  Stddev:	0.0050 secs.
  Requests/sec:	4000.0000

Response time histogram:
  0.0010 [1]	|∎

Latency distribution:
  10% in 0.0050 secs.
  50% in 0.0090 secs.
  99% in 0.0400 secs.
  99.9% in 0.0490 secs.

Error distribution:
  [3]	context deadline exceeded
  [2]	etcdserver: too many requests
`

const watchLatencyOutput = `
Put summary:

Summary:
  Total:	3.0000 secs.
  Average:	0.0014 secs.
  Requests/sec:	100.0000

Latency distribution:
  99% in 0.0060 secs.

Watch events summary:

Summary:
  Total:	3.0100 secs.
  Average:	0.0003 secs.
  Requests/sec:	9966.7774

Latency distribution:
  50% in 0.0003 secs.
  99% in 0.0021 secs.
`

func TestParseToolOutput(t *testing.T) {
	reports, err := parseToolOutput([]byte(putOutput))
	if err != nil {
		t.Fatal(err)
	}
	s, err := sliceFrom(metricThroughput, reports)
	if err != nil {
		t.Fatal(err)
	}
	if s.rate != 4000 || s.seconds != 2.5 || s.requests != 10000 || s.p50 != 0.009 || s.p99 != 0.04 || s.avg != 0.01 || s.errors != 5 {
		t.Fatalf("put report parsed as %+v", s)
	}

	reports, err = parseToolOutput([]byte(watchLatencyOutput))
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 2 || reports["Put summary"] == nil || reports["Watch events summary"] == nil {
		t.Fatalf("watch-latency: want the put and the watch events summaries, got %v", reports)
	}
	s, err = sliceFrom(metricWatchLatency, reports)
	if err != nil {
		t.Fatal(err)
	}
	if s.avg != 0.0003 || s.p99 != 0.0021 || s.p50 != 0.0003 {
		t.Fatalf("watch events summary parsed as %+v", s)
	}
	if _, err := sliceFrom(metricWatchFanout, reports); err == nil || !strings.Contains(err.Error(), "Watch creation summary") {
		t.Fatalf("a report without the watch creation summary: err %v", err)
	}
	if _, err := parseToolOutput([]byte("dial error: connection refused\n")); err == nil {
		t.Fatal("output without a summary parsed without an error")
	}
}

func TestToolRowsAreUniqueAndRun(t *testing.T) {
	seen := map[string]bool{}
	for _, id := range toolRowIDs() {
		if seen[id] {
			t.Fatalf("row %q twice", id)
		}
		seen[id] = true
	}
	for _, r := range toolRows {
		args := r.args(7)
		if !strings.Contains(strings.Join(args, " "), "total 7") {
			t.Errorf("row %s: --total not passed: %v", r.id, args)
		}
	}
}

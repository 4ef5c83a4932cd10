package main

import (
	"strings"
	"testing"
	"time"

	"github.com/noded/noded/server"
)

// The operations flags reach the member's configuration, by flag or by
// ETCD_* variable, under etcd's names and their experimental- aliases.
func TestOperationsFlags(t *testing.T) {
	cfg, err := parseConfig(t, []string{"--metrics=extensive", "--experimental-initial-corrupt-check",
		"--experimental-corrupt-check-time=3m", "--experimental-compact-hash-check-enabled"},
		[]string{"ETCD_COMPACT_HASH_CHECK_TIME=30s"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Metrics != server.MetricsExtensive || !cfg.InitialCorruptCheck || cfg.CorruptCheckTime != 3*time.Minute ||
		!cfg.CompactHashCheck || cfg.CompactHashCheckTime != 30*time.Second {
		t.Fatalf("operations flags: %+v", cfg)
	}
	cfg, err = parseConfig(t, nil, []string{"ETCD_CORRUPT_CHECK_TIME=1m"})
	if err != nil || cfg.CorruptCheckTime != time.Minute || cfg.InitialCorruptCheck || cfg.CompactHashCheck {
		t.Fatalf("ETCD_CORRUPT_CHECK_TIME: %+v %v", cfg, err)
	}
	if _, err := parseConfig(t, []string{"--metrics=verbose"}, nil); err == nil || !strings.Contains(err.Error(), `unknown metrics level "verbose"`) {
		t.Fatalf("--metrics=verbose: %v", err)
	}
	if _, err := parseConfig(t, []string{"--corrupt-check-time=-1s"}, nil); err == nil || !strings.Contains(err.Error(), "--corrupt-check-time must not be negative") {
		t.Fatalf("--corrupt-check-time=-1s: %v", err)
	}
}

package main

// End-to-end tests: real member processes on loopback, driven by
// go.etcd.io/etcd/client/v3, by Debian's etcdctl 3.4 and by plain HTTP.
//
// The tests are written against a binary path, not against noded's code, so
// the same tests run against etcd itself and their expectations are etcd's
// true behaviour:
//
//	go test ./cmd/noded                                  # noded, built from ./cmd/noded
//	NODED_E2E_BINARY=/usr/bin/etcd go test ./cmd/noded   # the same tests against etcd
//	NODED_E2E=0 go test ./cmd/noded                      # skip them
//	NODED_E2E_ETCDCTL=/path/to/etcdctl                   # another etcdctl (default: etcdctl on PATH)

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

var (
	// e2eBinary is the member binary every test starts.
	e2eBinary string
	// e2eSkipReason is set when the tests cannot run here; each test then
	// skips with it, so `go test -v` says why instead of passing silently.
	e2eSkipReason string
)

func TestMain(m *testing.M) {
	os.Exit(runE2E(m))
}

func runE2E(m *testing.M) int {
	if os.Getenv("NODED_E2E") == "0" {
		e2eSkipReason = "NODED_E2E=0"
		return m.Run()
	}
	if binary := os.Getenv("NODED_E2E_BINARY"); binary != "" {
		path, err := exec.LookPath(binary)
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: NODED_E2E_BINARY=%s: %v\n", binary, err)
			return 1
		}
		e2eBinary = path
		return m.Run()
	}
	if !hasDaemonSource() {
		// The daemon is written in this package; until its first file lands
		// there is nothing to build.
		e2eSkipReason = "cmd/noded has no daemon source yet (set NODED_E2E_BINARY=/usr/bin/etcd to run against etcd)"
		return m.Run()
	}
	buildDir, err := os.MkdirTemp("", "noded-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(buildDir)
	e2eBinary = filepath.Join(buildDir, "noded")
	build := exec.Command("go", "build", "-o", e2eBinary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/noded: %v\n", err)
		return 1
	}
	return m.Run()
}

// hasDaemonSource reports whether this directory holds a non-test Go file.
func hasDaemonSource() bool {
	_, thisFile, _, _ := runtime.Caller(0)
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(thisFile), "*.go"))
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			return true
		}
	}
	return false
}

// requireE2E skips the calling test when the end-to-end tests cannot run.
func requireE2E(t testing.TB) {
	t.Helper()
	if e2eSkipReason != "" {
		t.Skip("e2e: " + e2eSkipReason)
	}
	if testing.Short() {
		t.Skip("e2e: -short")
	}
}

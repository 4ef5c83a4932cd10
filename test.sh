#!/usr/bin/env bash
# Runs every test noded has, setting up a fresh machine first: Debian's
# etcdctl and etcd (real peers for the end-to-end tests and benchmarks),
# etcd 3.7's etcd and etcdutl (built from the Go module proxy once, for the
# tests that move data between etcd and noded) and the Go modules. Knobs:
#   NODED_SIM_SEEDS=N   simulate seeds 1..N instead of the CI set of 1,000
#   NODED_E2E=0         skip the end-to-end tests with real processes
#   NODED_CHAOS=0       skip the real-process fault campaign
#   NODED_CHAOS_RUNS=N  seeds in the campaign (default 3; see README)
#   NODED_ETCD37_DIR    a directory holding etcd and etcdutl 3.7 to use
#                       (default: built into ~/.cache/noded/etcd-v3.7.1)
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v etcdctl >/dev/null 2>&1 || ! command -v etcd >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-client etcd-server >/dev/null
  # The package starts a system etcd on the default ports; noded's tests
  # need those ports free.
  $sudo systemctl stop etcd >/dev/null 2>&1 || $sudo pkill -x etcd || true
fi

if [ ! -x /usr/bin/discovery.etcd.io ]; then
  # Debian's etcd-discovery: the discovery.etcd.io service the v2
  # discovery end-to-end test runs against a noded cluster.
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-discovery >/dev/null
  $sudo systemctl stop etcd-discovery >/dev/null 2>&1 || true
fi

go mod download

# etcd 3.7's etcd and etcdutl, for the data portability tests (snapshots in
# both directions, switching a cluster in place). etcd's modules carry
# replace directives, so `go install pkg@version` refuses them; a scratch
# module that requires them builds their main packages. About two minutes
# on a cold module cache, nothing once built.
build_etcd37() {
  local dir=$1 ver=v3.7.1 work
  if [ -x "$dir/etcd" ] && [ -x "$dir/etcdutl" ] && "$dir/etcd" --version 2>/dev/null | grep -q "Version: ${ver#v}"; then
    return
  fi
  echo "== building etcd ${ver#v} and etcdutl into $dir"
  mkdir -p "$dir"
  work=$(mktemp -d)
  (
    cd "$work"
    printf 'module etcd37\ngo 1.24\n' > go.mod
    printf '//go:build tools\n\npackage etcd37\n\nimport (\n\t_ "go.etcd.io/etcd/etcdutl/v3"\n\t_ "go.etcd.io/etcd/server/v3"\n)\n' > tools.go
    go get "go.etcd.io/etcd/server/v3@$ver" "go.etcd.io/etcd/etcdutl/v3@$ver" >/dev/null 2>&1
    CGO_ENABLED=0 go build -o "$dir/etcd" go.etcd.io/etcd/server/v3
    CGO_ENABLED=0 go build -o "$dir/etcdutl" go.etcd.io/etcd/etcdutl/v3
  )
  rm -rf "$work"
}
if [ "${NODED_E2E:-1}" != 0 ]; then
  export NODED_ETCD37_DIR=${NODED_ETCD37_DIR:-$HOME/.cache/noded/etcd-v3.7.1}
  build_etcd37 "$NODED_ETCD37_DIR"
fi
echo "== go vet"
go vet ./...
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== simulator: the CI seed set, in two processes"
# Runs of the simulator cannot overlap in one process, so the seed set is
# split over two shards, one per core. They run before the other packages
# so that the end-to-end tests, which time real processes, get the machine.
NODED_SIM_SHARD=0/2 go test -count=1 -timeout 20m ./sim/ -run 'TestSeeds$' &
shard0=$!
NODED_SIM_SHARD=1/2 go test -count=1 -timeout 20m ./sim/ -run 'TestSeeds$' &
shard1=$!
wait $shard0
wait $shard1

echo "== go test ./..."
NODED_SIM_SEEDS=0 NODED_CHAOS=0 go test -count=1 -timeout 20m ./...

echo "== real-process fault campaign and planted bugs"
# Alone, after the rest: it starts real clusters and times leases in true
# time, so it wants the machine to itself. Its closing figures are printed.
if [ "${NODED_CHAOS:-1}" != 0 ]; then
  go test -count=1 -timeout 30m -v -run 'TestCampaign|TestPlantedBugsAreCaught' ./cmd/internal/chaos \
    | grep -E '^(=== RUN|--- |PASS|FAIL|ok )|campaign:|faults injected|violations:|caught|seed [0-9]+: (PASS|FAIL)|violation:|evidence:|replay:|left out'
fi

echo "== WebAssembly: the simulator's trace hashes match the native run"
GOOS=js GOARCH=wasm go test -count=1 -timeout 20m \
  -vet=off -exec "$(go env GOROOT)/lib/wasm/go_js_wasm_exec" -run 'TestTraceHashGolden' ./sim/
echo "== all tests passed"

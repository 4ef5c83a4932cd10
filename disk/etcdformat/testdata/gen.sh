#!/usr/bin/env bash
# Regenerates the etcd files the tests of disk/etcdformat and server/etcddata
# read: for etcd 3.4 (Debian's /usr/bin/etcd) and 3.7 (ETCD37=/path/to/etcd,
# built by shared/tools/etcd-anchors.sh), one member writes a history (puts,
# deletes, a txn, a lease with keys, a compaction, more writes after it),
# then
#   etcd-<v>.snapshot     is `etcdctl snapshot save` of it (sha256 trailer),
#   etcd-<v>.status.json  is what `etcdutl snapshot status -w json` (3.7's,
#                         ETCDUTL=/path/to/etcdutl) says of it,
#   etcd-<v>-member/      is its data directory after a SIGKILL: member/snap/db
#                         and member/wal, the WAL's preallocated zeros cut
#                         off (the reader takes the end of a file as their
#                         start). The member runs with a long backend batch
#                         interval, so the database lags the WAL and the
#                         entries after its consistent index must be replayed.
# usage: ETCD37=/work/anchors/etcd ETCDUTL=/work/anchors/etcdutl bash gen.sh
set -euo pipefail
cd "$(dirname "$0")"
ETCDCTL=${ETCDCTL:-etcdctl}
gen() {
  local ver=$1 etcd=$2 port=$3
  local dir; dir=$(mktemp -d)
  local ep=127.0.0.1:$port peer=http://127.0.0.1:$((port+1))
  "$etcd" --name m --data-dir "$dir/d" --listen-client-urls "http://$ep" --advertise-client-urls "http://$ep" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" --initial-cluster "m=$peer" \
    --initial-cluster-token fixture --backend-batch-interval 1h --backend-batch-limit 100000 >"$dir/log" 2>&1 &
  local pid=$!
  local c="$ETCDCTL --endpoints $ep"
  export ETCDCTL_API=3
  for i in $(seq 1 50); do $c endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
  for i in $(seq 1 20); do $c put "key/$((i % 7))" "value-$i" >/dev/null; done
  $c put gone a >/dev/null; $c del gone >/dev/null
  lease=$($c lease grant 600 | awk '{print $2}')
  $c put --lease="$lease" leased/a 1 >/dev/null; $c put --lease="$lease" leased/b 2 >/dev/null
  short=$($c lease grant 300 | awk '{print $2}')
  $c put --lease="$short" leased/c 3 >/dev/null
  $c txn <<TXN >/dev/null
value("key/1") = "value-15"

put txn/x 1
del key/2

put txn/y 2

TXN
  rev=$($c get key/0 -w json | sed 's/.*"revision":\([0-9]*\).*/\1/')
  $c compact $((rev - 10)) >/dev/null
  $c del key/ --prefix >/dev/null
  $c put after compaction >/dev/null
  # The snapshot forces a backend commit; writes after it stay in the WAL only.
  rm -f "etcd-$ver.snapshot"
  $c snapshot save "etcd-$ver.snapshot" >/dev/null 2>&1
  if [ -n "${ETCDUTL:-}" ]; then
    "$ETCDUTL" snapshot status "etcd-$ver.snapshot" -w json 2>/dev/null >"etcd-$ver.status.json"
  fi
  for i in $(seq 1 5); do $c put "late/$i" "only-in-the-wal-$i" >/dev/null; done
  $c del "late/1" >/dev/null
  kill -9 $pid; wait $pid 2>/dev/null || true
  rm -rf "etcd-$ver-member"; mkdir -p "etcd-$ver-member/member/snap" "etcd-$ver-member/member/wal"
  # bbolt grows its file ahead of its pages; the zeros past them go.
  python3 - "$dir/d/member/snap/db" "etcd-$ver-member/member/snap/db" <<'PY'
import sys
data = open(sys.argv[1], 'rb').read()
end = (len(data.rstrip(b'\0')) + 4095) // 4096 * 4096
open(sys.argv[2], 'wb').write(data[:end])
PY
  for f in "$dir"/d/member/wal/*.wal; do
    python3 - "$f" "etcd-$ver-member/member/wal/$(basename "$f")" <<'PY'
import sys
data = open(sys.argv[1], 'rb').read()
end = len(data.rstrip(b'\0'))
end = (end + 7) // 8 * 8  # frames are 8-byte aligned
open(sys.argv[2], 'wb').write(data[:end])
PY
  done
  rm -rf "$dir"
}
gen 3.4 /usr/bin/etcd 23790
if [ -n "${ETCD37:-}" ]; then gen 3.7 "$ETCD37" 23794; fi
ls -l . etcd-*-member/member/*

#!/usr/bin/env bash
# Reproduces every figure in docs/PERFORMANCE.md on this machine. Run it on an
# otherwise idle machine: each figure is a ratio to a limit measured in the
# same run, but absolute numbers move with load. Takes about 5 minutes
# (add LONG=1 for the 10-minute memory run).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/postback-measure}
mkdir -p "$out"
go build -o "$out/postback" ./cmd/postback
pb="$out/postback"

echo "== limits: P-256 verify, bbolt commit per write vs group commit, bare echo handler"
go test ./webhooks -run '^$' -bench 'P256Verify|AppleVerify' -benchtime 2s | tee "$out/apple.txt"
go test ./store -run x -bench . -benchtime 2000x | tee "$out/store.txt"
go test ./server -run x -bench 'StripeIngest|BoltCommitPerWrite' -benchtime 2000x | tee "$out/server.txt"
"$pb" bench --bare --mix stripe=1 --duration 15s --concurrency 32 --json > "$out/bare.json"

echo "== ingest flat out over HTTP, durable, no destinations, each with its floor measured in the same invocation"
for src in stripe shopify custom apple; do
  "$pb" bench --self --floors --destinations none --mix "$src=1" --duration 15s --concurrency 32 --json > "$out/ingest-$src.json"
done
# Apple again with its notifications signed before the clock starts (the
# load generator's three ES256 signatures per notification out of the run).
"$pb" bench --self --destinations none --mix apple=1 --duration 15s --concurrency 128 --presign 60000 --json > "$out/ingest-apple-presigned.json"

echo "== 1000 notifications/s against a 20 ms webhook receiver"
"$pb" bench --self --destinations webhook --mix stripe=1 --rate 1000 --duration 30s --concurrency 64 \
  --receiver-latency 20ms --json > "$out/rate1000.json"

echo "== every source to every destination type"
"$pb" bench --self --mix stripe=1,shopify=1,custom=1,apple=1,google=1 --duration 15s --json > "$out/mixed.json"

echo "== lifecycle simulators, long form (docs/MAPPING.md)"
POSTBACK_SIM_ROUNDS=50 go test ./mapping -run Simulator -count=1 -v | grep 'simulator:' | tee "$out/simulator.txt"

echo "== dispatcher drain against min(rate, concurrency / latency)"
go test ./dispatch -run '^$' -bench Drain -benchtime 5000x | tee "$out/drain.txt"

echo "== PostgreSQL store: durable ingest against pgbench, 1 and 2 replicas, and at 300/500/1000 per second"
pgdir=""
if [ -z "${POSTBACK_TEST_PG:-}" ]; then
  eval "$(scripts/pg-cluster.sh start)"
  pgdir=$PGDATA_DIR
fi
pgfresh() { # a fresh database for one run
  psql "$POSTBACK_TEST_PG" -qc "DROP DATABASE IF EXISTS pb_measure WITH (FORCE)" -c "CREATE DATABASE pb_measure"
  DSN=$(printf '%s' "$POSTBACK_TEST_PG" | sed 's#/postback_test#/pb_measure#')
}
go test ./store/pgstore -run '^$' -bench DrainPG -benchtime 3000x | tee "$out/drain-pg.txt"
# --floors --dsn runs pgbench's insert-only transactions on the same database, same clients and
# duration, first, and reports the ingest's ratio to it.
for c in 16 32; do
  for r in 1 2; do
    pgfresh
    "$pb" bench --self --dsn "$DSN" --replicas "$r" --pool-size 16 --floors --destinations none --concurrency "$c" --duration 10s --json > "$out/pg-ingest-c$c-r$r.json"
  done
done
for rate in 300 500 1000; do
  pgfresh
  "$pb" bench --self --dsn "$DSN" --pool-size 16 --destinations webhook --receiver-latency 20ms --rate "$rate" --concurrency 64 --duration 20s --json > "$out/pg-rate$rate.json"
done
[ -n "$pgdir" ] && scripts/pg-cluster.sh stop "$pgdir"

if [ "${LONG:-}" = 1 ]; then
  echo "== 10 minutes at 300/s: memory"
  "$pb" bench --self --destinations webhook --mix stripe=1 --rate 300 --duration 10m --concurrency 32 --receiver-latency 20ms \
    --retention 2m --json > "$out/long.json"
fi
echo "results in $out"

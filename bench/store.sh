#!/usr/bin/env bash
# Step commits per second and commit latency per backend (issue 3): SQLite with synchronous=NORMAL
# and FULL, and PostgreSQL on a throw-away cluster with durability switched back on (fsync,
# synchronous_commit, full_page_writes: the test cluster turns them off), each with 1 and 64
# sessions committing at once. Every figure comes from the same run on the same machine, so compare
# them with each other, not with other machines.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bench/store_commits
STEPS1=${STEPS1:-2000}   # steps for the single session
STEPS64=${STEPS64:-100}  # steps per session with 64 sessions
tmp=$(mktemp -d)
pgdir=$(mktemp -d /tmp/agentd-bench-pg.XXXXXX); rmdir "$pgdir"
trap 'scripts/pg-test-cluster.sh stop "$pgdir" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT

# The database lives on the same disk as the work tree, as it would in production.
db="$PWD/build/bench/store-bench.db"
for mode in normal full; do
  for conc in 1 64; do
    rm -f "$db" "$db-wal" "$db-shm"
    steps=$STEPS1; [ "$conc" = 64 ] && steps=$STEPS64
    "$BIN" "$db" "$conc" "$steps" "$mode"
  done
done
rm -f "$db" "$db-wal" "$db-shm"

url=$(scripts/pg-test-cluster.sh start "$pgdir")
psql -X -q "$url" -c "ALTER SYSTEM SET fsync = on" -c "ALTER SYSTEM SET synchronous_commit = on" \
  -c "ALTER SYSTEM SET full_page_writes = on" -c "SELECT pg_reload_conf()" >/dev/null
for conc in 1 64; do
  steps=$STEPS1; [ "$conc" = 64 ] && steps=$STEPS64
  "$BIN" "$url" "$conc" "$steps"
done

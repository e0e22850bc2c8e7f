#!/usr/bin/env bash
# Quick figures for a closing note (the full benchmark suite is issue 8): start-up time, idle RSS,
# server CPU per /healthz request (wrk), and server CPU per chat session through the fake upstream
# (the official openai client, streaming, tool_calling_agent: 2 upstream round trips per session).
# CPU is agentd's own utime+stime from /proc, so client and fake-upstream CPU are not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${AGENTD_BIN:-build/agentd}
SESSIONS=${SESSIONS:-1000}
CONC=${CONC:-20}
command -v wrk >/dev/null || { echo "bench: installing wrk"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
[ -d tests/e2e/node_modules ] || (cd tests/e2e && npm ci --no-audit --no-fund >/dev/null)
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

cpu_ms() { # utime+stime of a pid in ms
  awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)*1000/hz}' "/proc/$1/stat"
}
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }

node tests/fake_upstream/server.mjs --port 0 >"$tmp/up.out" &
for _ in $(seq 50); do grep -q LISTENING "$tmp/up.out" && break; sleep 0.1; done
UP=$(awk '/LISTENING/{print $2}' "$tmp/up.out")
PORT=18431
t0=$(date +%s%N)
AGENTD_LISTEN=127.0.0.1:$PORT AGENTD_DB="$tmp/a.db" AGENTD_LOG_LEVEL=warn OPENAI_BASE_URL=http://127.0.0.1:$UP/v1 \
  OPENAI_API_KEY=k AGENTD_MODEL=fake-model "$BIN" serve 2>"$tmp/agentd.log" &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.002; done
t1=$(date +%s%N)
sleep 0.5
echo "start-up to ready: $(( (t1 - t0) / 1000000 )) ms (includes process spawn and the curl poll)"
echo "idle RSS: $(rss_kb $PID) KB"

c0=$(cpu_ms $PID)
out=$(wrk -t1 -c50 -d5s "http://127.0.0.1:$PORT/healthz")
c1=$(cpu_ms $PID)
reqs=$(echo "$out" | awk '/requests in/{print $1}')
rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
echo "/healthz: $reqs requests, $rps req/s (wrk -c50 on the same 2 cores), server CPU $(awk -v a="$c0" -v b="$c1" -v n="$reqs" 'BEGIN{printf "%.2f", (b-a)*1000/n}') us/request"

c0=$(cpu_ms $PID)
node bench/sessions.mjs "http://127.0.0.1:$PORT/v1" "$SESSIONS" "$CONC"
c1=$(cpu_ms $PID)
echo "chat sessions: server CPU $(awk -v a="$c0" -v b="$c1" -v n="$SESSIONS" 'BEGIN{printf "%.3f", (b-a)/n}') ms/session; RSS after: $(rss_kb $PID) KB"
kill -TERM $PID; wait $PID

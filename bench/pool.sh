#!/usr/bin/env bash
# The instance pool's memory (issue 5): N sequential sessions through one instance (RSS after a
# warm-up and at the end: the goal is no growth), and the RSS one idle instance costs (K templates,
# one session each, so K idle instances; the RSS they add over the same templates without
# instances, divided by K). agentd is the release build with the fake upstream; RSS from /proc.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${AGENTD_BIN:-build/agentd}
N=${POOL_SESSIONS:-10000}
K=${POOL_INSTANCES:-50}
WARM=${POOL_WARMUP:-500}
[ -d tests/e2e/node_modules ] || (cd tests/e2e && npm ci --no-audit --no-fund >/dev/null)
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }

node tests/fake_upstream/server.mjs --port 0 >"$tmp/up.out" &
for _ in $(seq 50); do grep -q LISTENING "$tmp/up.out" && break; sleep 0.1; done
UP=$(awk '/LISTENING/{print $2}' "$tmp/up.out")
PORT=18432
B=http://127.0.0.1:$PORT
AGENTD_LISTEN=127.0.0.1:$PORT AGENTD_DB="$tmp/a.db" AGENTD_LOG_LEVEL=warn OPENAI_BASE_URL=http://127.0.0.1:$UP/v1 \
  OPENAI_API_KEY=k AGENTD_MODEL=fake-model AGENTD_POOL_MAX_INSTANCES=$((K + 8)) "$BIN" serve 2>"$tmp/agentd.log" &
PID=$!
until curl -sf "$B/readyz" >/dev/null; do sleep 0.01; done

node bench/sessions.mjs "$B/v1" "$WARM" 1 >/dev/null
r0=$(rss_kb $PID)
node bench/sessions.mjs "$B/v1" "$N" 1
r1=$(rss_kb $PID)
inst=$(curl -s "$B/admin/instances?state=idle" | node -e '
  let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);
  const t=j.instances.filter(i=>i.template==="tool_calling_agent");
  console.log(`${t.length} instance(s) of tool_calling_agent, sessions served ${t.map(i=>i.sessions_served).join(",")}`)})')
echo "pool: $N sequential sessions after a $WARM-session warm-up: RSS $r0 KB -> $r1 KB ($((r1 - r0)) KB); $inst"

# K templates (copies of tool_calling_agent), then one session each: K idle instances.
for i in $(seq "$K"); do
  curl -sf -H 'Content-Type: application/json' "$B/admin/templates" -d "{\"name\":\"copy_$i\",\"kind\":\"tool_calling\",
    \"system_prompt\":\"You act by calling one tool.\",\"tools\":[\"reasoning_tool\",\"clarification_tool\",\"final_answer_tool\",
    \"current_time\",\"text_stats\"]}" >/dev/null
done
sleep 0.5
node bench/sessions.mjs "$B/v1" 20 1 copy_1 >/dev/null # warms what any new session path allocates once
a0=$(rss_kb $PID)
for i in $(seq 2 "$K"); do node bench/sessions.mjs "$B/v1" 1 1 "copy_$i" >/dev/null; done
a1=$(rss_kb $PID)
idle=$(curl -s "$B/admin/instances?state=idle" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).pool.idle))')
echo "pool: $((K - 1)) more idle instances: RSS $a0 KB -> $a1 KB, $(awk -v a="$a0" -v b="$a1" -v k="$((K - 1))" 'BEGIN{printf "%.1f", (b-a)/k}') KB per idle instance ($idle idle in the pool)"
kill -TERM $PID; wait $PID

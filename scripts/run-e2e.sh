#!/usr/bin/env bash
# Runs the end-to-end suite (tests/e2e/*.test.mjs, node's built-in test runner, the official openai
# client) against the agentd binary given as the only argument. Installs the pinned npm packages
# from tests/e2e/package-lock.json when node_modules is missing or the lock changed. Files run one at
# a time; each test file starts its own agentd and in-process fake upstream.
set -euo pipefail
usage() { echo "usage: scripts/run-e2e.sh <path-to-agentd-binary>" >&2; exit 2; }
[ $# -eq 1 ] || usage
bin=$1
if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then
  echo "run-e2e: '$bin' is not an executable file (build it first, e.g. make asan)" >&2
  exit 2
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
cd "$(dirname "$0")/.."

command -v node >/dev/null || { echo "run-e2e: node is not installed (scripts/install-deps.sh)" >&2; exit 2; }
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || { echo "run-e2e: node >= 20 required, found $(node --version)" >&2; exit 2; }

# Install from the lock only when needed; the stamp records which lock node_modules matches.
stamp=tests/e2e/node_modules/.e2e-lock.sha256
want=$(sha256sum tests/e2e/package-lock.json | cut -d' ' -f1)
if [ ! -d tests/e2e/node_modules/openai ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "run-e2e: npm ci in tests/e2e"
  (cd tests/e2e && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi

# ASan builds: leaks are reported on a graceful exit (and make the exit code non-zero, which the
# shutdown tests catch); keep the reports readable.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "run-e2e: AGENTD_BIN=$bin"
set +e
AGENTD_BIN=$bin timeout --signal=TERM --kill-after=10 600 \
  node --test --test-concurrency=1 --test-timeout=120000 --test-reporter=spec tests/e2e/
rc=$?
set -e
[ $rc -eq 124 ] && echo "run-e2e: the suite did not finish within 600 s" >&2
exit $rc

#!/usr/bin/env bash
# Runs a command with a throw-away PostgreSQL cluster: starts one in a fresh temporary directory
# (scripts/pg-test-cluster.sh), exports AGENTD_TEST_PG_URL and AGENTD_TEST_PG_DATA for the tests,
# runs the command, and stops and removes the cluster however the command ends. If
# AGENTD_TEST_PG_URL is already set, that server is used as it is and nothing is started.
# Usage: scripts/with-pg.sh COMMAND [ARGS...]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: scripts/with-pg.sh COMMAND [ARGS...]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${AGENTD_TEST_PG_URL:-}" ]; then
  exec "$@"
fi
dir=$(mktemp -d /tmp/agentd-pg.XXXXXX)
rmdir "$dir" # the cluster script creates it
cleanup() { "$here/pg-test-cluster.sh" stop "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
"$here/pg-test-cluster.sh" start "$dir" >/dev/null
eval "$("$here/pg-test-cluster.sh" env "$dir")"
export AGENTD_TEST_PG_URL AGENTD_TEST_PG_DATA
echo "with-pg: PostgreSQL test cluster at $AGENTD_TEST_PG_URL"
set +e
"$@"
rc=$?
set -e
exit $rc

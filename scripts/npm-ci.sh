#!/usr/bin/env bash
# Installs the pinned npm packages of a test directory (DIR/package-lock.json) when node_modules
# is missing or the lock changed since the last install. Usage: scripts/npm-ci.sh DIR
set -euo pipefail
dir=$1
[ -f "$dir/package-lock.json" ] || { echo "npm-ci: $dir/package-lock.json is missing" >&2; exit 2; }
command -v npm >/dev/null || { echo "npm-ci: npm is not installed (scripts/install-deps.sh)" >&2; exit 2; }
stamp=$dir/node_modules/.lock.sha256
want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
if [ ! -d "$dir/node_modules" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "npm-ci: npm ci in $dir"
  (cd "$dir" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi

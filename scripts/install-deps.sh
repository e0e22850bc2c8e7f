#!/usr/bin/env bash
# Installs the Debian packages agentd builds and tests with, only those that are missing, so that
# `make run` and `make test` work on a fresh bookworm machine. Needs root (or sudo) for apt-get.
set -euo pipefail
pkgs=(build-essential pkg-config clang libclang-rt-14-dev
      libuv1-dev libcurl4-openssl-dev libhttp-parser-dev libjansson-dev libsqlite3-dev libpq-dev liblua5.4-dev libyaml-dev libcmocka-dev
      postgresql sqlite3 json-schema-test-suite nodejs npm curl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from elsewhere (nvm, a tarball): accept any node >= 18 on PATH.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
list=$(printf '%s ' "${missing[@]}" | xargs echo)
[ -z "$list" ] && exit 0
echo "install-deps: installing $list"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq $list

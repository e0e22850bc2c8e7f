#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the PostgreSQL backend's tests.
#
#   scripts/pg-test-cluster.sh start DIR   create (initdb) and start a cluster in DIR, create the
#                                          database agentd_test, print its URL (also in DIR/url)
#   scripts/pg-test-cluster.sh env DIR     print AGENTD_TEST_PG_URL=... and AGENTD_TEST_PG_DATA=...
#                                          for eval "$(scripts/pg-test-cluster.sh env DIR)"
#   scripts/pg-test-cluster.sh stop DIR    stop it (fast mode) and remove DIR
#
# The cluster trusts every connection, so it listens on 127.0.0.1 only (plus a unix socket inside
# DIR) on a free port. It runs with fsync, synchronous_commit and full_page_writes off: its data is
# disposable, and tests should not wait for disks. Everything lives in DIR; the only state left
# outside it is the system user `agentd-test`, created when the script runs as root (initdb and
# the server refuse to run as root). `start` is idempotent: on a DIR it made before it starts the
# server again if needed and prints the same URL.
set -euo pipefail

MARKER=.agentd-pg-test-cluster
RUN_USER=agentd-test

die() {
  echo "pg-test-cluster: $*" >&2
  exit 1
}

usage() {
  echo "usage: $0 start|stop|env DIR" >&2
  exit 2
}

# The newest Debian-style server directory wins; otherwise whatever is on PATH.
find_bindir() {
  local d best
  # sort -V: version 10 after 9.
  best=$(for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && echo "$d"
  done | sort -V | tail -n1)
  if [ -n "$best" ]; then
    echo "$best"
  elif command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
  else
    die "initdb/pg_ctl not found (install postgresql, or put its bin directory on PATH)"
  fi
}

# Runs a command as the cluster's owner: ourselves, or the unprivileged user when we are root.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u "$RUN_USER" -- "$@"
    else
      setpriv --reuid="$RUN_USER" --regid="$RUN_USER" --init-groups -- "$@"
    fi
  else
    "$@"
  fi
}

ensure_run_user() {
  [ "$(id -u)" -eq 0 ] || return 0
  if ! id "$RUN_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$RUN_USER" 2>/dev/null ||
      id "$RUN_USER" >/dev/null 2>&1 || die "could not create the system user $RUN_USER"
  fi
}

owner_name() {
  if [ "$(id -u)" -eq 0 ]; then echo "$RUN_USER"; else id -un; fi
}

# A port nobody listens on at the moment (the server start is retried if it is taken meanwhile).
pick_port() {
  local p i
  for i in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  die "no free port found"
}

# The settings the test cluster needs, in a file of its own that postgresql.conf includes, so a
# plain `pg_ctl -D DIR/data start` (as the restart test does) brings it back on the same port.
write_conf() {
  local data=$1 port=$2 sockdir=$3
  as_owner tee "$data/agentd-test.conf" >/dev/null <<EOF
# Written by scripts/pg-test-cluster.sh. Throw-away test data: durability is off on purpose.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sockdir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 60
EOF
}

cmd_start() {
  local dir=$1 bindir data sockdir user port url i log
  bindir=$(find_bindir)
  ensure_run_user
  user=$(owner_name)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  data="$dir/data"
  log="$dir/server.log"

  if [ ! -e "$dir/$MARKER" ]; then
    [ -z "$(ls -A "$dir")" ] || die "$dir is not empty and was not made by this script"
    touch "$dir/$MARKER"
  fi
  if [ "$(id -u)" -eq 0 ]; then
    chown "$RUN_USER:" "$dir"
    chmod 0700 "$dir"
    as_owner test -w "$dir" ||
      die "user $RUN_USER cannot reach $dir (its parent directories need o+x); use a directory under /tmp"
  fi

  if [ -f "$dir/url" ] && [ -f "$data/PG_VERSION" ]; then
    # Made before: start it again if it is not running, and print the same URL.
    if ! as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as_owner "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null ||
        die "the server in $data did not start; see $log"
    fi
    cat "$dir/url"
    return
  fi

  # Unix socket paths are limited to 107 bytes; a deep DIR gets a short directory in /tmp,
  # recorded so that stop removes it too.
  sockdir="$dir/sock"
  if [ ${#sockdir} -gt 80 ]; then
    sockdir=$(mktemp -d /tmp/agentd-pg-sock.XXXXXX)
    echo "$sockdir" >"$dir/sockdir"
    [ "$(id -u)" -eq 0 ] && chown "$RUN_USER:" "$sockdir"
  else
    as_owner mkdir -p "$sockdir"
  fi

  if [ ! -f "$data/PG_VERSION" ]; then
    as_owner rm -rf "$data"
    as_owner "$bindir/initdb" -D "$data" -U "$user" --auth=trust --encoding=UTF8 --locale=C --no-sync \
      >"$dir/initdb.log" 2>&1 || die "initdb failed; see $dir/initdb.log"
    # Trust, but only over the unix socket and IPv4 loopback (the only address it listens on).
    as_owner tee "$data/pg_hba.conf" >/dev/null <<'EOF'
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  trust
EOF
    echo "include 'agentd-test.conf'" | as_owner tee -a "$data/postgresql.conf" >/dev/null
  fi

  for i in $(seq 1 10); do
    port=$(pick_port)
    write_conf "$data" "$port" "$sockdir"
    if as_owner "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null 2>&1; then
      break
    fi
    # Someone took the port between the check and the bind: try another one.
    if grep -q -e "could not bind" -e "Address already in use" "$log" 2>/dev/null; then
      port=""
      continue
    fi
    tail -n 20 "$log" >&2 2>/dev/null || true
    die "the server did not start; see $log"
  done
  [ -n "$port" ] || die "could not find a free port"

  "$bindir/createdb" -h 127.0.0.1 -p "$port" -U "$user" agentd_test 2>"$dir/createdb.log" ||
    die "createdb failed; see $dir/createdb.log"
  url="postgres://$user@127.0.0.1:$port/agentd_test"
  echo "$url" >"$dir/url"
  echo "$url"
}

cmd_stop() {
  local dir=$1 bindir
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd)
  if [ ! -e "$dir/$MARKER" ]; then
    [ -z "$(ls -A "$dir")" ] || die "$dir was not made by this script; not removing it"
    rmdir "$dir"
    return 0
  fi
  if [ -f "$dir/data/PG_VERSION" ]; then
    bindir=$(find_bindir)
    if as_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null ||
        die "the server in $dir/data did not stop"
    fi
  fi
  if [ -f "$dir/sockdir" ]; then
    local s
    s=$(cat "$dir/sockdir")
    case "$s" in /tmp/agentd-pg-sock.*) rm -rf "$s" ;; esac
  fi
  rm -rf "$dir"
}

cmd_env() {
  local dir=$1
  [ -f "$dir/url" ] || die "no cluster in $dir (run: $0 start $dir)"
  dir=$(cd "$dir" && pwd)
  printf 'AGENTD_TEST_PG_URL=%q\n' "$(cat "$dir/url")"
  printf 'AGENTD_TEST_PG_DATA=%q\n' "$dir/data"
}

[ $# -eq 2 ] || usage
case "$1" in
  start) cmd_start "$2" ;;
  stop) cmd_stop "$2" ;;
  env) cmd_env "$2" ;;
  *) usage ;;
esac

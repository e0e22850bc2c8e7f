#!/usr/bin/env bash
# Smoke-runs each libFuzzer target over its seed corpus plus a few seconds of mutation.
# Longer runs: FUZZ_SECONDS=600 make fuzz.
set -u
secs=${FUZZ_SECONDS:-8}
fail=0
for f in "$@"; do
  name=$(basename "$f")
  corpus=tests/fuzz/corpus/${name#fuzz_}
  work=$(mktemp -d)
  [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/
  if ! "$f" -max_total_time="$secs" -max_len=65536 -artifact_prefix=build/fuzz/ "$work" >"build/fuzz/$name.log" 2>&1; then
    echo "FUZZ FAILED: $name (see build/fuzz/$name.log)"; tail -30 "build/fuzz/$name.log"; fail=1
  else
    echo "fuzz $name: $(grep -o 'Done [0-9]* runs' "build/fuzz/$name.log" | tail -1)"
  fi
  rm -rf "$work"
done
exit $fail

#!/bin/sh
# Reads {"a": N, "b": M} (integers) from stdin and prints {"sum": N+M, "product": N*M}.
read -r line
a=$(printf '%s\n' "$line" | sed -n 's/.*"a" *: *\(-\{0,1\}[0-9][0-9]*\).*/\1/p')
b=$(printf '%s\n' "$line" | sed -n 's/.*"b" *: *\(-\{0,1\}[0-9][0-9]*\).*/\1/p')
if [ -z "$a" ] || [ -z "$b" ]; then
  echo "add.sh: need integers a and b" >&2
  exit 2
fi
printf '{"sum": %d, "product": %d}\n' "$((a + b))" "$((a * b))"

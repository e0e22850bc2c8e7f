#!/bin/sh
# Builds a 64 MiB string in the shell's own memory, then prints its length.
x=$(head -c 67108864 /dev/zero | tr '\0' x)
printf '{"len": %d}\n' "${#x}"

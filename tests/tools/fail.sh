#!/bin/sh
# Complains on stderr and exits with status 3.
echo "fail.sh: starting" >&2
echo "fail.sh: the frobnicator is broken" >&2
exit 3

#!/bin/sh
# Answers and exits, leaving a sleep that left the process group (setsid) and holds stdout open:
# the group kill cannot reach it, so the executor must stop waiting for EOF on its own.
setsid sleep 300 &
echo $! >"$PIDFILE.tmp" && mv "$PIDFILE.tmp" "$PIDFILE"
echo '{"ok": true}'

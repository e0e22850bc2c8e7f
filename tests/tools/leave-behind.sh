#!/bin/sh
# Answers and exits at once, but leaves a background sleep (pid in $PIDFILE) that holds stdout open.
sleep 300 &
echo $! >"$PIDFILE.tmp" && mv "$PIDFILE.tmp" "$PIDFILE"
echo '{"ok": true}'

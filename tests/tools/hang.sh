#!/bin/sh
# Hangs, with a grandchild: starts a background sleep (in the tool's process group), writes its pid
# to $PIDFILE, then sleeps in the foreground. Only killing the whole group ends both.
sleep 300 &
echo $! >"$PIDFILE.tmp" && mv "$PIDFILE.tmp" "$PIDFILE"
sleep 300

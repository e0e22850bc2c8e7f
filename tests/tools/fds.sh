#!/bin/sh
# Lists the open file descriptors of ls itself: 0, 1, 2 and the directory ls is reading (3) when
# nothing was inherited.
exec ls /proc/self/fd

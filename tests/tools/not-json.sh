#!/bin/sh
# Answers in plain text.
echo "hello, this is not JSON"

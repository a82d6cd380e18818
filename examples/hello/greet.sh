#!/bin/sh
# Built on @BUILT@ by `pyrun build`.
echo "$GREETING, ${1:-world}! (uid $(id -u), in $(pwd))"

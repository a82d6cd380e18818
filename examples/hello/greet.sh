#!/bin/sh
# Built on @BUILT@ by `pyrun build`.
# `greet NAME` prints a greeting; `greet serve [PORT]` serves it over HTTP (busybox httpd).
if [ "$1" = serve ]; then
    mkdir -p /tmp/www
    echo "$GREETING, visitor! (served by $(hostname))" > /tmp/www/index.html
    exec httpd -f -p "${2:-8080}" -h /tmp/www
fi
echo "$GREETING, ${1:-world}! (uid $(id -u), in $(pwd))"

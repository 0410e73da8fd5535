#!/usr/bin/env bash
# Make sure Debian's wrk is installed: the load generator of the benchmark's HTTP scenario
# (bench/http_load.py), which drives `eventbank serve` from a process of its own with a Lua script.
# Nothing here starts a server or a load.
set -euo pipefail

WRK=/usr/bin/wrk

if command -v wrk >/dev/null; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "ensure-wrk: wrk not found. Install Debian's wrk package as root:" >&2
    echo "    apt-get update && apt-get install -y wrk" >&2
    exit 1
fi
echo "ensure-wrk: installing wrk with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends wrk; }; then
    echo "ensure-wrk: apt-get could not install wrk" >&2
    exit 1
fi
test -x "$WRK" || { echo "ensure-wrk: $WRK still missing" >&2; exit 1; }

#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the dashboard's browser tests, which drive it with
# Playwright's Python package (executable_path=/usr/bin/chromium). Playwright's own browser
# download (`playwright install`) is never used; nothing here starts a browser.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [[ -x $CHROMIUM ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "ensure-browser: $CHROMIUM not found. Install Debian's chromium package as root:" >&2
    echo "    apt-get update && apt-get install -y chromium" >&2
    exit 1
fi
echo "ensure-browser: installing chromium with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }; then
    echo "ensure-browser: apt-get could not install chromium" >&2
    exit 1
fi
test -x "$CHROMIUM" || { echo "ensure-browser: $CHROMIUM still missing" >&2; exit 1; }

#!/usr/bin/env bash
# Make headless Chromium available for the report's browser test (tests/report): installs
# Debian's `chromium` package when it is missing and this runs as root. Never fails the run:
# without a browser that one test skips, saying why.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium.sh: chromium is missing and cannot be installed here (needs root and apt-get)" >&2
    exit 0
fi
echo "chromium.sh: installing chromium (Debian package)" >&2
export DEBIAN_FRONTEND=noninteractive
timeout 600 apt-get install -y -q --no-install-recommends chromium >&2 \
    || { timeout 300 apt-get update -q >&2 && timeout 600 apt-get install -y -q \
         --no-install-recommends chromium >&2; } \
    || echo "chromium.sh: could not install chromium; the browser test will skip" >&2
exit 0

#!/usr/bin/env sh
# Installs redis-server when it is missing: Debian/Ubuntu via apt-get (as root or with sudo).
set -eu
command -v redis-server >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
    command -v redis-server >/dev/null 2>&1 && exit 0
fi
echo "redis-server is required (7.0 or newer): install it with your package manager, e.g." >&2
echo "  apt-get install redis-server   |   brew install redis" >&2
exit 1

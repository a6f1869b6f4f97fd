#!/usr/bin/env sh
# Installs Chromium when it is missing (the web page's browser test runs it headless):
# Debian/Ubuntu via apt-get (as root or with sudo), the distribution's `chromium` package.
set -eu
command -v chromium >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
    command -v chromium >/dev/null 2>&1 && exit 0
fi
echo "chromium is required for the browser test: install it with your package manager, e.g." >&2
echo "  apt-get install chromium   |   brew install --cask chromium" >&2
exit 1

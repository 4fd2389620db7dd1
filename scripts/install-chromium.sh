#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (Playwright's own browser download is not reachable).
# Installs it with apt-get, as root, only when it is missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -n "${MAESTRO_CHROMIUM:-}" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium is missing: install Debian's package (sudo apt-get install chromium) or set MAESTRO_CHROMIUM" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
command -v chromium

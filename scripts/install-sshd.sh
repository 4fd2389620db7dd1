#!/usr/bin/env bash
# The ssh tests of the Git sync (tests/integration/test_git_ssh.py) start a real OpenSSH server as
# a child process. Installs Debian's openssh-server with apt-get, as root, only when it is missing;
# the package's own service is not started (the tests run their own sshd on a free port).
set -euo pipefail
if [ -x /usr/sbin/sshd ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "sshd is missing: install Debian's package (sudo apt-get install openssh-server)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d exit 101: the package's post-install does not start a system sshd on port 22.
policy=/usr/sbin/policy-rc.d
created=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created=1
fi
trap 'if [ -n "$created" ]; then rm -f "$policy"; fi' EXIT
# Quiet when it works; everything apt said when it does not.
log=$(mktemp)
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends openssh-server; } >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
test -x /usr/sbin/sshd

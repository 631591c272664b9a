#!/usr/bin/env bash
# Make sure PostgreSQL's server programs are installed, so the tests can run their own cluster on a free port.
# Never fails `make test`: without them the PostgreSQL tests are skipped, each with the reason printed.
set -uo pipefail
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && exit 0
command -v initdb >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL is not installed and this is not root: its tests will be skipped (apt-get install -y postgresql)." >&2
  exit 0
fi
echo "installing postgresql with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; } || echo "installing postgresql failed: its tests will be skipped" >&2
exit 0

#!/usr/bin/env bash
# Make sure the redis-server program is installed (the tests start their own servers on free ports).
set -euo pipefail
command -v redis-server >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "redis-server is not installed and this is not root: run 'sudo apt-get install -y redis-server' and retry." >&2
  exit 1
fi
echo "installing redis-server with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq redis-server >/dev/null
command -v redis-server >/dev/null

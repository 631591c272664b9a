#!/usr/bin/env bash
# Make sure the wrk HTTP load generator is installed (`make bench` measures ingest with it).
set -euo pipefail
command -v wrk >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "wrk is not installed and this is not root: run 'sudo apt-get install -y wrk' and retry." >&2
  exit 1
fi
echo "installing wrk with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq wrk >/dev/null
command -v wrk >/dev/null

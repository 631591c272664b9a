#!/usr/bin/env bash
# `ensure-program.sh PROGRAM [PACKAGE]`: make sure a program from Debian's packages is installed, with apt-get when
# this is root, otherwise saying how. redis-server: the tests and `make run` start their own servers with it;
# wrk: `make bench` measures ingest with it.
set -euo pipefail
program=$1
package=${2:-$1}
command -v "$program" >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "$program is not installed and this is not root: run 'sudo apt-get install -y $package' and retry." >&2
  exit 1
fi
echo "installing $package with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "$package" >/dev/null
command -v "$program" >/dev/null

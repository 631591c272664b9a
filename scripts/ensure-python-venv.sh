#!/usr/bin/env bash
# Create the virtualenv with Python >= 3.11, installing Debian's venv package when it is missing.
set -euo pipefail
python=$1 venv=$2
[ -x "$venv/bin/python" ] && exit 0
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Tripmail needs Python 3.11 or newer as '$python' (set PYTHON=/path/to/python3.11)." >&2
  exit 1
fi
if ! "$python" -m venv "$venv" 2>/dev/null; then
  rm -rf "$venv"
  if [ "$(id -u)" -ne 0 ]; then
    echo "'$python -m venv' failed: install Debian's python3-venv (apt-get install -y python3-venv) and retry." >&2
    exit 1
  fi
  echo "installing python3-venv with apt-get" >&2
  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  "$python" -m venv "$venv"
fi

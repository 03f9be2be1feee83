#!/usr/bin/env bash
# Creates the project's virtualenv on a fresh Debian machine: system packages first (only the
# missing ones), then the Python dependencies. Safe to run again; `make` calls it only when
# pyproject.toml or this script changed.
set -euo pipefail
venv=${1:-.venv}

apt_missing=()
command -v python3 >/dev/null 2>&1 || apt_missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_missing+=(python3-venv)
# The NATS output's tests start a real JetStream server (Debian installs it in /usr/sbin).
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || apt_missing+=(nats-server)
if ((${#apt_missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: missing ${apt_missing[*]}; run as root or: sudo apt-get install ${apt_missing[*]}" >&2
    # Only Python is indispensable; without nats-server the NATS tests skip and say why.
    [[ " ${apt_missing[*]} " == *" python3"* ]] && exit 1
    apt_missing=()
  fi
fi
if ((${#apt_missing[@]})); then
  echo "bootstrap: installing ${apt_missing[*]} with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}"
fi

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: Python 3.11 or newer is needed, found $(python3 --version)" >&2
  exit 1
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
echo "bootstrap: $venv is ready" >&2
# The kernel source: BCC, kernel headers and tracefs (reports and carries on when it cannot).
scripts/install_bcc.sh "$venv"

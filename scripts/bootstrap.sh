#!/usr/bin/env bash
# Creates the project's virtualenv on a fresh Debian machine: system packages first (only the
# missing ones, named in scripts/system-packages.txt), then every Python dependency at the exact
# version and hash of requirements.lock. Safe to run again; `make` calls it only when the lock,
# pyproject.toml or a set-up script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}

apt_missing=()
# A Python from elsewhere (pyenv, a container image) is fine as long as it can build a venv.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || mapfile -t -O 0 apt_missing < <(scripts/system_packages.sh base --missing)
# A test tool already on PATH or in /usr/sbin (Debian's place) is used as it is, wherever it came from:
# each package of the group is named after the command it provides (nats-server, g++).
for pkg in $(scripts/system_packages.sh test --missing); do
  command -v "$pkg" >/dev/null 2>&1 || [ -x "/usr/sbin/$pkg" ] || apt_missing+=("$pkg")
done
if ((${#apt_missing[@]})) && [ "$(id -u)" != 0 ]; then
  echo "bootstrap: missing ${apt_missing[*]}; run as root or: sudo apt-get install ${apt_missing[*]}" >&2
  # Only Python is indispensable; without nats-server or g++ their tests skip and say why.
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || exit 1
  apt_missing=()
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
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# --require-hashes refuses any file whose hash the lock does not name; --no-deps keeps pip from
# resolving anything the lock does not list. The project itself goes in editable, with the
# setuptools the lock pins (no isolated build that would fetch an unpinned one).
"${pip[@]}" install --require-hashes --no-deps -r requirements.lock
"${pip[@]}" install --no-deps --no-build-isolation -e .
if ! "${pip[@]}" check; then
  echo "bootstrap: pyproject.toml asks for what requirements.lock does not pin: run 'make lock' and commit both" >&2
  exit 1
fi
echo "bootstrap: $venv is ready" >&2
# The kernel source: BCC, kernel headers and tracefs (reports and carries on when it cannot).
scripts/install_bcc.sh "$venv"

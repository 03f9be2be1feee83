#!/usr/bin/env bash
# Prints the Debian packages of one group from scripts/system-packages.txt, one per line; with --missing,
# only those dpkg does not have installed.
set -euo pipefail
group=${1:?usage: system_packages.sh GROUP [--missing]}
for pkg in $(awk -v g="$group" '!/^#/ && $1 == g { print $2 }' "$(dirname "$0")/system-packages.txt"); do
  if [ "${2:-}" = --missing ] && dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    continue
  fi
  echo "$pkg"
done

#!/usr/bin/env bash
# Prints the Debian packages of one group from scripts/system-packages.txt, one per line.
set -euo pipefail
group=${1:?usage: system_packages.sh GROUP}
awk -v g="$group" '!/^#/ && $1 == g { print $2 }' "$(dirname "$0")/system-packages.txt"

#!/usr/bin/env bash
# Installs what the kernel source needs: BCC from Debian (python3-bpfcc), kernel headers for BCC to
# compile against, tracefs mounted, and the `bcc` module visible from the project's virtualenv.
# Safe to run again. Never fails the build: without root or BPF the agent runs its other sources,
# so every problem is reported and the script exits 0.
set -uo pipefail
venv=${1:-.venv}
headers_root=${FALCO_AGENT_HEADERS_ROOT:-/usr/src/falco-agent-kernel-headers}

say() { echo "install_bcc: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
  say "not root: the kernel source needs root (CAP_BPF); skipping BCC set-up, other sources still run"
  exit 0
fi

mapfile -t missing < <("$(dirname "$0")/system_packages.sh" kernel --missing)
if ((${#missing[@]})); then
  say "installing ${missing[*]} with apt-get"
  apt-get update -qq || say "apt-get update failed; trying the install with the cached package lists"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    say "could not install ${missing[*]}; the kernel source will be unavailable"
    exit 0
  fi
fi

# The venv sees only the bcc package, not the rest of Debian's dist-packages.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)
if [ -n "$site" ] && [ -d /usr/lib/python3/dist-packages/bcc ] && [ ! -e "$site/bcc" ]; then
  ln -s /usr/lib/python3/dist-packages/bcc "$site/bcc"
fi

# Tracepoints are found through tracefs; containers and minimal systems often lack the mount.
if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
  mkdir -p /sys/kernel/tracing
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || say "could not mount tracefs on /sys/kernel/tracing"
fi

release=$(uname -r)
if [ -d "/lib/modules/$release/build" ]; then
  exit 0
fi
if apt-cache show "linux-headers-$release" >/dev/null 2>&1; then
  say "installing linux-headers-$release"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "linux-headers-$release" >/dev/null && exit 0
fi
if compgen -G "$headers_root/usr/src/linux-headers-*-amd64/include/linux/kconfig.h" >/dev/null; then
  exit 0
fi

# No headers for this exact kernel: the newest generic Debian ones do, because our BPF programs read
# only tracepoint arguments and helper values, never kernel struct layouts.
newest=$(apt-cache pkgnames linux-headers- | grep -E '^linux-headers-[0-9.]+-[0-9]+-amd64$' | sort -V | tail -1)
if [ -z "$newest" ]; then
  say "no linux-headers-*-amd64 package is available; the kernel source will be unavailable"
  exit 0
fi
common=${newest%-amd64}-common
say "no headers for kernel $release; using $newest and $common unpacked in $headers_root"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download -qq "$newest" "$common" >/dev/null); then
  say "apt-get download $newest $common failed; the kernel source will be unavailable"
  exit 0
fi
mkdir -p "$headers_root"
for deb in "$work"/*.deb; do
  dpkg-deb -x "$deb" "$headers_root"
done
# BCC wants one tree: Debian splits the generated headers (-amd64) from the common ones.
cp -an "$headers_root/usr/src/$common/." "$headers_root/usr/src/$newest/"
say "kernel headers ready in $headers_root/usr/src/$newest"

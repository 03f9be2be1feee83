"""Find what BCC needs on this machine (root, the bcc module, kernel headers, tracefs) or say why not.

scripts/install_bcc.sh installs these; this module only looks, mounts tracefs when it is missing,
and turns every gap into a KernelUnavailable whose message says what to do.
"""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
from pathlib import Path
from types import ModuleType

from agent.errors import AgentError

#: Where scripts/install_bcc.sh unpacks Debian headers when none match the running kernel.
UNPACKED_HEADERS = Path("/usr/src/falco-agent-kernel-headers/usr/src")
TRACEFS_MOUNTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


class KernelUnavailable(AgentError):
    """The kernel source cannot run here; the message names the reason and the fix."""


def kernel_headers(configured: str = "") -> Path:
    """The header tree BCC should compile against: configured, matching, else the unpacked Debian ones."""
    if configured:
        path = Path(configured)
        if not (path / "include" / "linux" / "kconfig.h").exists():
            raise KernelUnavailable(f"sources.kernel.kernel_headers: {path} has no include/linux/kconfig.h; "
                                    "point it at a merged kernel header tree")
        return path
    matching = Path("/lib/modules") / platform.release() / "build"
    if matching.exists():
        return matching
    unpacked = sorted(UNPACKED_HEADERS.glob("linux-headers-*-amd64"))
    for tree in reversed(unpacked):
        if (tree / "include" / "linux" / "kconfig.h").exists():
            return tree
    raise KernelUnavailable(f"no kernel headers for {platform.release()}: run `make` as root "
                            "(scripts/install_bcc.sh installs or unpacks them)")


def tracefs() -> Path:
    """The mounted tracefs (mounting it on /sys/kernel/tracing when absent)."""
    for path in TRACEFS_MOUNTS:
        if (path / "events").is_dir():
            return path
    target = TRACEFS_MOUNTS[0]
    result = subprocess.run(["mount", "-t", "tracefs", "nodev", str(target)], capture_output=True, text=True,
                            check=False)
    if result.returncode == 0 and (target / "events").is_dir():
        return target
    raise KernelUnavailable(f"tracefs is not mounted and mounting it on {target} failed "
                            f"({result.stderr.strip() or result.returncode}); mount it: "
                            f"mount -t tracefs nodev {target}")


def load_bcc(headers: Path) -> ModuleType:
    """Import BCC for a compile against `headers`; raises KernelUnavailable saying why it cannot."""
    if os.geteuid() != 0:
        raise KernelUnavailable("the kernel source needs root (CAP_BPF and tracefs); the other sources run")
    # BCC reads the header location from the environment when it compiles.
    os.environ["BCC_KERNEL_SOURCE"] = str(headers)
    try:
        return importlib.import_module("bcc")
    except ImportError:
        raise KernelUnavailable("the bcc Python module is missing: run `make` as root "
                                "(scripts/install_bcc.sh installs python3-bpfcc)") from None


def syscall_tracepoints(root: Path) -> frozenset[str]:
    """Syscalls this kernel has enter tracepoints for."""
    prefix = "sys_enter_"
    return frozenset(entry.name[len(prefix):] for entry in (root / "events" / "syscalls").iterdir()
                     if entry.name.startswith(prefix))


def prepare(headers: str = "") -> tuple[ModuleType, Path, frozenset[str]]:
    """Everything a probe needs here: the bcc module, the header tree and the syscalls with tracepoints.

    Raises KernelUnavailable naming the first thing missing.
    """
    root = tracefs()
    tree = kernel_headers(headers)
    return load_bcc(tree), tree, syscall_tracepoints(root)

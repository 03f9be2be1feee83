"""Building plugin libraries with the system compilers, for the plugin benchmark and the plugin tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

#: What each kind of source needs; Debian's g++ package brings gcc with it.
COMPILERS = {".cpp": "g++", ".c": "gcc"}


def missing_compiler() -> str | None:
    """Why plugins cannot be built here (naming the package to install), or None."""
    absent = [name for name in COMPILERS.values() if shutil.which(name) is None]
    if absent:
        return f"{' and '.join(absent)} not installed: apt-get install g++ (scripts/system-packages.txt, group test)"
    return None


def compile_command(source: Path, out: Path, *, include: Path | None = None,
                    defines: tuple[str, ...] = ()) -> list[str]:
    """The command building `source` (C or C++) into the shared library `out`."""
    std = "-std=c++17" if source.suffix == ".cpp" else "-std=c11"
    flags = [std, "-O2", "-fPIC", "-shared", *(f"-D{d}" for d in defines)]
    if include is not None:
        flags.append(f"-I{include}")
    return [COMPILERS[source.suffix], *flags, "-o", str(out), str(source)]


def build_all(commands: dict[str, list[str]]) -> None:
    """Run the build commands in parallel (the C++ SDK takes seconds per plugin); RuntimeError with the compiler's
    output when one fails."""
    procs = {name: subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for name, cmd in commands.items()}
    failures = []
    for name, proc in procs.items():
        _out, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failures.append(f"building {name} failed:\n{err}")
    if failures:
        raise RuntimeError("\n".join(failures))


def dummy_c_command(reference: Path, out_dir: Path) -> tuple[Path, list[str]]:
    """Falco's reference plugin dummy_c, built with the C++ SDK as its README says: (library path, command)."""
    plugins = reference / "plugins"
    library = out_dir / "libdummy_c.so"
    return library, compile_command(plugins / "dummy_c" / "dummy.cpp", library,
                                    include=plugins / "sdk-cpp" / "include")

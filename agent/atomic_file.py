"""Replacing a small state file so that a crash leaves the old content or the new one, never a mix."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from agent.errors import AgentError
from agent.location import Location


def replace_atomically(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder.

    The temporary name starts with a dot and ends in `.tmp`, so watched directories' patterns
    (`*.json`, `*.log`) never pick it up.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    # The rename itself is durable only once the folder's entry is on disk.
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def prepare_folder(path: Path) -> None:
    """Create the folder that will hold `path`; AgentError naming the file when that is impossible."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AgentError(f"cannot create the folder for this file: {err.strerror}", Location(file=str(path))) from err

"""Small state files (checkpoints): replaced so that a crash leaves the old content or the new one, never a
mix, and read back tolerantly, since a state file we cannot read means starting over (events repeated, not
lost)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
import structlog

from agent.errors import AgentError
from agent.location import Location

log = structlog.get_logger(__name__)


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


def read_state(path: Path, *, version: int) -> dict[str, Any]:
    """The JSON object saved at `path` by write_state with this `version`; empty when there is none, or
    (logged as `checkpoint_unreadable`) when it cannot be read, is not an object or has another version."""
    try:
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as err:
        log.warning("checkpoint_unreadable", file=str(path), reason=str(err))
        return {}
    if not isinstance(document, dict) or document.get("version") != version:
        log.warning("checkpoint_unreadable", file=str(path), reason=f"not a version {version} checkpoint")
        return {}
    return document


def write_state(path: Path, document: dict[str, Any], *, version: int) -> None:
    """Replace the state file at `path` atomically with `document` and its `version`."""
    replace_atomically(path, orjson.dumps({"version": version, **document}, option=orjson.OPT_INDENT_2))

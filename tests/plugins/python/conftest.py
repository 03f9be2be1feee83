"""The test plugin package (`plugin_site`, from ../conftest.py) importable in the test process."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def installed(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The plugin package importable and its entry points visible in this process, for one test."""
    monkeypatch.syspath_prepend(str(plugin_site))
    importlib.invalidate_caches()
    yield plugin_site
    for name in [name for name in sys.modules if name == "demo_ticker" or name.startswith("demo_ticker.")]:
        del sys.modules[name]

"""The plugins every plugin test may need, made once per session: the native libraries (built into a temporary
folder; tests skip, saying why, without compilers) and the test Python plugin package (../python_plugin/, a src
layout declaring the `falco_agent.plugins` entry points), installed with pip into a folder of its own that tests
put on sys.path or PYTHONPATH."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_build import missing_compiler

from tests.support.plugins import Built, build_test_plugins

PYTHON_PACKAGE = Path(__file__).resolve().parent / "python_plugin"


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, reference: Path) -> Built:
    reason = missing_compiler()
    if reason is not None:
        pytest.skip(f"plugin tests build real plugin libraries: {reason}")
    return build_test_plugins(reference, tmp_path_factory.mktemp("native_plugins"))


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the installed package and its .dist-info, where importlib.metadata finds the entry points."""
    work = tmp_path_factory.mktemp("python_plugin")
    source = work / "source"  # a copy, so that the build leaves nothing in the checkout
    shutil.copytree(PYTHON_PACKAGE, source)
    site = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(source)], check=True, capture_output=True)
    return site

"""Shared fixtures: the reference material (skipping when it is absent), a local AWS endpoint, uncached loggers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference() -> Path:
    """The shared reference folder; tests that need it skip, naming the path, when it is missing."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference material not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """The URL of a moto server started for the test session; boto3 talks to it over HTTP."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True, scope="session")
def _uncached_loggers() -> Iterator[None]:
    """Tests that run the CLI in-process configure structlog as the agent does, with loggers cached on first use; a
    logger cached then would escape the `capture_logs` of every later test, so under test nothing is cached."""
    configure = structlog.configure

    def uncached(**settings: Any) -> None:
        configure(**{**settings, "cache_logger_on_first_use": False})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(structlog, "configure", uncached)
        yield

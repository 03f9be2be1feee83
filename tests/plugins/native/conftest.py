"""A sink for the native sources under test; the libraries come from ../conftest.py (`built`)."""

from __future__ import annotations

import pytest

from tests.support.plugins import ListSink


@pytest.fixture
def sink() -> ListSink:
    return ListSink()

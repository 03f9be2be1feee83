"""Skip kernel tests only where the machine truly cannot load BPF, printing why."""

from __future__ import annotations

import pytest

from sources.kernel.probe import probe_available


def require_probe() -> None:
    reason = probe_available()
    if reason is not None:
        pytest.skip(f"kernel probe unavailable: {reason}")

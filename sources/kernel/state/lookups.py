"""Read-only views of the state that field extractors need besides the event's own thread."""

from __future__ import annotations

from dataclasses import dataclass

from sources.kernel.state.accounts import AccountBook
from sources.kernel.state.containers import ContainerRegistry
from sources.kernel.state.thread_table import ThreadTable


@dataclass(frozen=True, slots=True)
class Lookups:
    """Shared by every event of one state: threads by tid, account names, container metadata."""

    threads: ThreadTable
    accounts: AccountBook
    containers: ContainerRegistry

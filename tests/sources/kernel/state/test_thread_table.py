"""The thread table's bound: past its size it evicts exited entries first, then the oldest."""

from __future__ import annotations

from sources.kernel.state.context import StateLimits
from sources.kernel.state.fds import FdTable
from sources.kernel.state.thread_table import ThreadTable
from sources.kernel.state.threads import FsInfo, ThreadInfo
from tests.sources.kernel.state_fixtures import Stream


def _thread(tid: int) -> ThreadInfo:
    return ThreadInfo(tid, tid, f"t{tid}", FdTable(8), FsInfo("/"))


def test_eviction_prefers_exited_threads() -> None:
    """When full, exited threads go before live ones, and the count of evictions is kept."""
    table = ThreadTable(max_threads=32)
    for tid in range(1, 33):
        table.add(_thread(tid))
    thirty = table.get(30)
    assert thirty is not None
    thirty.exited = True
    table.add(_thread(100))
    assert table.get(30) is None and table.get(100) is not None and table.evicted >= 1
    assert len(table) <= 32


def test_state_stays_bounded() -> None:
    """Thousands of short-lived forks without exits never grow the table past its limit."""
    s = Stream(limits=StateLimits(max_threads=64))
    for tid in range(1000, 3000):
        s.fork(200, tid)
    assert len(s.state.ctx.table) <= 64 and s.state.counters["threads_evicted"] > 0


def test_fd_table_is_bounded() -> None:
    """A process's fd table stops growing at its limit and counts what it dropped."""
    s = Stream(limits=StateLimits(max_fds_per_process=4))
    for fd in range(3, 10):
        s.open(200, f"/tmp/{fd}", res=fd)
    assert len(s.thread(200).fds) == 4 and s.state.counters["fds_dropped"] == 3

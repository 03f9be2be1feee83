"""The kernel prefilter in the real kernel: opens no rule can match stay there (with their closes), the rest
arrive and alert, and a rules reload changes what stays by map updates alone."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.builtin_sources import new_engine
from agent.engine.engine import Engine
from tests.support.kernel import AlertLog, live_kernel_source, run_script

pytestmark = [pytest.mark.root, pytest.mark.bpf]

OPENS = 400


def _engine(rules: Path, *watched: Path) -> Engine:
    names = ", ".join(str(path) for path in watched)
    rules.write_text(
        "- rule: Watched file read\n  desc: a read of a watched file\n"
        f"  condition: evt.type in (open, openat, openat2) and evt.is_open_read=true and fd.num>=0"
        f" and fd.name in ({names})\n"
        "  output: watched read (file=%fd.name raw=%fd.nameraw proc=%proc.name)\n  priority: WARNING\n")
    engine = new_engine()
    assert engine.load_rules_files([rules]).successful
    return engine


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    tag = uuid.uuid4().hex[:10]
    watched, other = tmp_path / f"watched-{tag}", tmp_path / f"other-{tag}"
    watched.write_text("w")
    other.write_text("o")
    return watched, other


@pytest.fixture
def alerts(tmp_path: Path, files: tuple[Path, Path]) -> Iterator[AlertLog]:
    with live_kernel_source(_engine(tmp_path / "rules.yaml", files[0])) as log:
        yield log


def _opens(path: Path, count: int) -> str:
    return (f"{sys.executable} -c \"import os\nfor _ in range({count}): os.close(os.open('{path}', os.O_RDONLY))\"")


def _filtered(log: AlertLog, name: str) -> int:
    assert log.source is not None
    return int(log.source.metrics().get(f"kernel_filtered_{name}", 0))


def _wait_filtered(log: AlertLog, name: str, at_least: int, timeout_s: float = 5.0) -> int:
    """The source reads the kernel's counters once a second: wait for them to reach `at_least`."""
    deadline = time.monotonic() + timeout_s
    while (count := _filtered(log, name)) < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def test_unmatchable_opens_and_their_closes_stay_in_the_kernel(alerts: AlertLog, files: tuple[Path, Path]) -> None:
    watched, other = files
    assert alerts.source is not None and "openat" in alerts.source.filtering
    before_open, before_close = _filtered(alerts, "openat"), _filtered(alerts, "close")
    run_script(_opens(other, OPENS) + "\n" + _opens(watched, 1))
    hit = alerts.wait_for(lambda a: a.output_fields.get("fd.name") == str(watched), timeout_s=5.0)
    assert hit is not None, "the watched file's open must leave the kernel and alert"
    assert _wait_filtered(alerts, "openat", before_open + OPENS) >= before_open + OPENS
    assert _wait_filtered(alerts, "close", before_close + OPENS) >= before_close + OPENS
    assert not any(a.output_fields.get("fd.name") == str(other) for a in alerts.alerts)


def test_a_reload_changes_what_stays_without_a_new_probe(alerts: AlertLog, files: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    watched, other = files
    assert alerts.source is not None
    probe_before = alerts.source._probe
    alerts.engine = _engine(tmp_path / "reloaded.yaml", other)
    deadline = time.monotonic() + 10.0
    hit = None
    while hit is None and time.monotonic() < deadline:  # the source follows rules within 2 s
        since = len(alerts.alerts)
        run_script(_opens(other, 1))
        hit = alerts.wait_for(lambda a: a.output_fields.get("fd.name") == str(other), since=since, timeout_s=1.0)
    assert hit is not None, "after the reload the newly watched file must leave the kernel"
    assert alerts.source._probe is probe_before
    before = _filtered(alerts, "openat")
    run_script(_opens(watched, OPENS))
    assert _wait_filtered(alerts, "openat", before + OPENS) >= before + OPENS


def test_a_reload_that_uses_closes_makes_them_events(alerts: AlertLog, files: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    """Closes are captured for the state but become events only once a rule uses them: after a reload to a rule on
    `close`, the watched file's close alerts, without a new probe."""
    watched, _other = files
    rules = tmp_path / "closes.yaml"
    rules.write_text("- rule: Watched file closed\n  desc: a close of a watched file\n"
                     f"  condition: evt.type = close and fd.name = {watched}\n"
                     "  output: watched close (file=%fd.name)\n  priority: WARNING\n")
    engine = new_engine()
    assert engine.load_rules_files([rules]).successful
    since = len(alerts.alerts)
    run_script(_opens(watched, 1))
    assert alerts.wait_for(lambda a: a.rule == "Watched file read", since=since) is not None
    alerts.engine = engine
    deadline = time.monotonic() + 10.0
    hit = None
    while hit is None and time.monotonic() < deadline:  # the source follows rules within 2 s
        since = len(alerts.alerts)
        run_script(_opens(watched, 1))
        hit = alerts.wait_for(lambda a: a.rule == "Watched file closed", since=since, timeout_s=1.0)
    assert hit is not None, "after the reload the watched file's close must reach the engine"


def test_a_relative_open_of_a_watched_file_always_leaves_the_kernel(alerts: AlertLog,
                                                                   files: tuple[Path, Path]) -> None:
    watched, _other = files
    since = len(alerts.alerts)
    run_script(f"cd {watched.parent} && " + _opens(Path(watched.name), 1))
    hit = alerts.wait_for(lambda a: a.output_fields.get("fd.name") == str(watched), since=since, timeout_s=5.0)
    assert hit is not None


def test_a_kept_directory_used_as_a_dirfd_is_sent_first_so_the_open_is_named(alerts: AlertLog,
                                                                            files: tuple[Path, Path]) -> None:
    """The directory's plain open (no O_DIRECTORY) matches no rule and stays in the kernel; its use as a dirfd
    sends it first, so the relative open through it is named, even though the process exits at once (no /proc
    to ask afterwards)."""
    watched, _other = files
    assert alerts.source is not None
    before = int(alerts.source.metrics()["kernel_prefilter_revealed"])
    since = len(alerts.alerts)
    run_script(f"{sys.executable} -c \"import os\nd = os.open('{watched.parent}', os.O_RDONLY)\n"
               f"os.close(os.open('{watched.name}', os.O_RDONLY, dir_fd=d))\"")
    hit = alerts.wait_for(lambda a: a.output_fields.get("fd.name") == str(watched), since=since, timeout_s=5.0)
    assert hit is not None
    deadline = time.monotonic() + 5.0
    while int(alerts.source.metrics()["kernel_prefilter_revealed"]) <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert int(alerts.source.metrics()["kernel_prefilter_revealed"]) > before


def _named_through_a_reused_number(alerts: AlertLog, first: Path, watched: Path, directory_flags: str) -> bool:
    """A child opens and closes `first`, opens the watched file's directory with `directory_flags` under the same
    descriptor number, then the watched file relative to it: whether the open was named after the watched file."""
    since = len(alerts.alerts)
    run_script(f"{sys.executable} -c \"import os\nf = os.open('{first}', os.O_RDONLY)\nos.close(f)\n"
               f"d = os.open('{watched.parent}', {directory_flags})\nassert d == f, (d, f)\n"
               f"os.close(os.open('{watched.name}', os.O_RDONLY, dir_fd=d))\"")
    return alerts.wait_for(lambda a: a.output_fields.get("fd.name") == str(watched), since=since,
                           timeout_s=5.0) is not None


def test_a_descriptor_number_reused_by_kept_opens_reveals_the_latest_path(alerts: AlertLog,
                                                                         files: tuple[Path, Path]) -> None:
    """The kernel keeps one slot per descriptor number and rewrites it in place: after a kept open of another file
    is closed, the kept directory opened under the same number is what its use as a dirfd reveals."""
    watched, other = files
    assert _named_through_a_reused_number(alerts, other, watched, "os.O_RDONLY")


def test_a_closed_kept_descriptor_is_not_revealed_again(alerts: AlertLog, files: tuple[Path, Path]) -> None:
    """A kept directory's close stays in the kernel and frees its slot: a later open of the watched file's
    directory with O_DIRECTORY (always sent) under the same number is what names the relative open, not the
    closed descriptor's path."""
    watched, other = files
    assert alerts.source is not None
    before = int(alerts.source.metrics()["kernel_prefilter_revealed"])
    assert _named_through_a_reused_number(alerts, other.parent.parent, watched, "os.O_RDONLY | os.O_DIRECTORY")
    time.sleep(1.2)  # the source reads the kernel's counters once a second
    assert int(alerts.source.metrics()["kernel_prefilter_revealed"]) == before


@pytest.mark.parametrize("link", ["/proc/self/fd/{fd}", "/dev/fd/{fd}", "/proc/thread-self/fd/{fd}"])
def test_a_kept_descriptor_reopened_through_proc_is_sent_first(alerts: AlertLog, files: tuple[Path, Path],
                                                              tmp_path: Path, link: str) -> None:
    """A read-only open of the other file stays in the kernel (nothing watches it); after a reload that watches
    it, its reopen through the process's own fd link is named as the file, although user space never saw the
    first open: the kernel sends it first."""
    _watched, other = files
    assert alerts.source is not None
    script = (f"import os, time\nfd = os.open('{other}', os.O_RDONLY)\ntime.sleep(3)\n"
              f"os.close(os.open('{link}'.format(fd=fd), os.O_RDONLY))\nprint(fd)")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # its first open happened under the first rules, and stayed in the kernel
        alerts.engine = _engine(tmp_path / "reloaded.yaml", other)
        since = len(alerts.alerts)
        out, _ = child.communicate(timeout=20)
    finally:
        child.kill()
    reopened = link.format(fd=int(out))
    hit = alerts.wait_for(lambda a: a.output_fields.get("fd.nameraw") == reopened, since=since, timeout_s=5.0)
    assert hit is not None, "the reopen through /proc must be named as the file"
    assert hit.output_fields.get("fd.name") == str(other)

"""Evasions of the file rules the live kernel tests cover: the same open spelled another way still raises its alert.

Each case runs, in a child Python process, one open of a rule's target file written as an evasion (a relative
path from another directory, `..`, `//`, a directory fd, `fchdir`, `openat2`, an O_PATH descriptor reopened
through /proc, /proc/self/root and /proc/self/cwd, an over-long path) and expects the rule's alert with the
fields the plain spelling gets, `fd.name` the canonical path first. Alerts are told apart by a tag on the
child's command line; a marker step run after the child proves every event of it has been evaluated before
the alerts are counted.

Links too: a symlink to the target, a symlink to its directory, a hard link. Where Falco names the file by the link
the agent knows the files the rules name by device and inode (watched_files.py), so the alert names the target.
Making a link to a sensitive file raises its own alert as well (Create Symlink / Hardlink Over Sensitive Files).
The targets exist before the source starts: the files the rules name are those its scan found.
"""

from __future__ import annotations

import os
import shlex
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.alert import Alert
from tests.support.kernel import (
    AlertLog,
    live_kernel_source,
    marker_script,
    run_script,
    stable_rules_engine,
    wait_for_marker,
)

pytestmark = [pytest.mark.root, pytest.mark.bpf]

# The interpreter's real path: proc.exepath is then the same whether the state read it from /proc after the exec
# or, for a child gone by then, took it from the execve record. The child needs nothing of the venv.
PY = os.path.realpath(sys.executable)

#: What the evasions may use: PATH the target (FOLDER/NAME), FLAGS the open flags of the behaviour, WORK a
#: directory of the test's own, openat2(dirfd, path, flags, resolve). Each evasion leaves its open in `fd`.
CHILD = r"""
import ctypes, os, struct, sys
PATH, FLAGS, WORK = sys.argv[2], int(sys.argv[3]), sys.argv[4]
FOLDER, NAME = os.path.split(PATH)
AT_FDCWD = -100
RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 0x02, 0x04, 0x08
SYS_OPENAT2 = 437  # the same on every architecture, as every syscall added since 424
libc = ctypes.CDLL(None, use_errno=True)

def openat2(dirfd, path, flags, resolve):
    how = struct.pack("=QQQ", flags | os.O_CLOEXEC, 0o644 if flags & os.O_CREAT else 0, resolve)
    fd = libc.syscall(SYS_OPENAT2, dirfd, path.encode(), how, len(how))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "openat2 " + path)
    return fd

exec(sys.argv[1])
os.close(fd)
"""


@dataclass(frozen=True)
class Target:
    """A behaviour a covered rule alerts on: opening `path` ({tag}: the case's own) with `flags`."""

    rule: str
    path: str
    flags: int
    #: Whether an O_PATH open of the target raises the rule too: Falco counts O_PATH as a read (O_RDONLY is 0).
    o_path_alerts: bool = False

    def file(self, tag: str) -> str:
        return self.path.format(tag=tag)


_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC

TARGETS = {
    "read_shadow": Target("Read sensitive file untrusted", "/etc/shadow", os.O_RDONLY, o_path_alerts=True),
    "clear_log": Target("Clear Log Activities", "/var/log/falco-agent-{tag}.log", _WRITE),
    # Not in the stable file: our rules/syscall.yaml covers writes below /etc and binary directories.
    "write_below_etc": Target("File Written Below Etc", "/etc/falco-agent-{tag}", _WRITE),
    "write_binary_dir": Target("Binary Directory Modified", "/usr/local/bin/falco-agent-{tag}", _WRITE),
}


@dataclass(frozen=True)
class Evasion:
    code: str
    #: The evasion opens the target once more with O_PATH before its last open.
    o_path_first: bool = False


_REOPEN = "p = os.open(PATH, os.O_PATH); fd = os.open({via!r}.format(pid=os.getpid(), p=p), FLAGS)"

EVASIONS = {
    "plain": Evasion("fd = os.open(PATH, FLAGS, 0o644)"),
    "relative_from_another_cwd": Evasion("os.chdir(WORK); fd = os.open(os.path.relpath(PATH, WORK), FLAGS, 0o644)"),
    "relative_from_its_directory": Evasion("os.chdir(FOLDER); fd = os.open(NAME, FLAGS, 0o644)"),
    "dot_dot": Evasion("fd = os.open(WORK + '/..' * WORK.count('/') + PATH, FLAGS, 0o644)"),
    "dot": Evasion("fd = os.open(FOLDER + '/./' + NAME, FLAGS, 0o644)"),
    "double_slash": Evasion("fd = os.open('/' + PATH.replace('/', '//'), FLAGS, 0o644)"),
    "dirfd_o_directory": Evasion(
        "d = os.open(FOLDER, os.O_RDONLY | os.O_DIRECTORY); fd = os.open(NAME, FLAGS, 0o644, dir_fd=d)"),
    "dirfd_plain_open": Evasion("d = os.open(FOLDER, os.O_RDONLY); fd = os.open(NAME, FLAGS, 0o644, dir_fd=d)"),
    "dirfd_o_path": Evasion("d = os.open(FOLDER, os.O_PATH); fd = os.open(NAME, FLAGS, 0o644, dir_fd=d)"),
    "fchdir_to_dir_fd": Evasion("d = os.open(FOLDER, os.O_RDONLY); os.fchdir(d); fd = os.open(NAME, FLAGS, 0o644)"),
    "dirfd_then_dot_dot": Evasion(
        "d = os.open(WORK, os.O_RDONLY); fd = os.open(os.path.relpath(PATH, WORK), FLAGS, 0o644, dir_fd=d)"),
    "openat2_beneath_dirfd": Evasion(
        "d = os.open(FOLDER, os.O_RDONLY | os.O_DIRECTORY); "
        "fd = openat2(d, NAME, FLAGS, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)"),
    "openat2_absolute": Evasion("fd = openat2(AT_FDCWD, PATH, FLAGS, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)"),
    "o_path_then_proc_self_fd": Evasion(_REOPEN.format(via="/proc/self/fd/{p}"), o_path_first=True),
    "o_path_then_proc_thread_self_fd": Evasion(_REOPEN.format(via="/proc/thread-self/fd/{p}"), o_path_first=True),
    "o_path_then_proc_pid_fd": Evasion(_REOPEN.format(via="/proc/{pid}/fd/{p}"), o_path_first=True),
    "o_path_then_dev_fd": Evasion(_REOPEN.format(via="/dev/fd/{p}"), o_path_first=True),
    "proc_self_root": Evasion("fd = os.open('/proc/self/root' + PATH, FLAGS, 0o644)"),
    "proc_self_cwd": Evasion("os.chdir(FOLDER); fd = os.open('/proc/self/cwd/' + NAME, FLAGS, 0o644)"),
    # Longer than the kernel lookup key of a prefilter, shorter than the 3968 bytes the probe copies.
    "long_absolute_path": Evasion("fd = os.open('/' + './' * 600 + PATH[1:], FLAGS, 0o644)"),
    "long_relative_path": Evasion("os.chdir(FOLDER); fd = os.open('./' * 600 + NAME, FLAGS, 0o644)"),
    # Past what the probe copies, within PATH_MAX (4096 with its NUL).
    "longest_path": Evasion("fd = os.open('/' + './' * ((4090 - len(PATH)) // 2) + PATH[1:], FLAGS, 0o644)"),
    "symlink": Evasion("os.symlink(PATH, WORK + '/link'); fd = os.open(WORK + '/link', FLAGS, 0o644)"),
    "symlinked_directory": Evasion("os.symlink(FOLDER, WORK + '/dir'); fd = os.open(WORK + '/dir/' + NAME, FLAGS)"),
    # Removed at once: a second name of a sensitive file must not outlive the test.
    "hardlink": Evasion("os.link(PATH, WORK + '/hard'); fd = os.open(WORK + '/hard', FLAGS); "
                        "os.unlink(WORK + '/hard')"),
}


@dataclass(frozen=True)
class LinkCase:
    """Reading /etc/shadow through a link `code` makes in WORK: `rule` fires on making it, with `fields`."""

    code: str
    rule: str
    fields: dict[str, str]


LINKS = {
    "symlink": LinkCase("os.symlink(PATH, WORK + '/link'); fd = os.open(WORK + '/link', FLAGS)",
                        "Create Symlink Over Sensitive Files",
                        {"evt.arg.target": "/etc/shadow", "evt.arg.linkpath": "{work}/link"}),
    # The link is removed at once: a second name of /etc/shadow must not outlive the test.
    "hardlink": LinkCase("os.link(PATH, WORK + '/hard'); fd = os.open(WORK + '/hard', FLAGS); "
                         "os.unlink(WORK + '/hard')",
                         "Create Hardlink Over Sensitive Files",
                         {"evt.arg.oldpath": "/etc/shadow", "evt.arg.newpath": "{work}/hard"}),
}


@pytest.fixture(scope="module")
def files() -> Iterator[dict[str, str]]:
    """Each target's file by target name, one per module run; files to write to are made beforehand (the O_PATH
    evasions need them to exist) and removed at the end."""
    tag = uuid.uuid4().hex[:12]
    paths = {name: target.path.format(tag=tag) for name, target in TARGETS.items()}
    made = [path for name, path in paths.items() if TARGETS[name].flags & os.O_CREAT]
    for path in made:
        Path(path).write_text("x")
    try:
        yield paths
    finally:
        for path in made:
            Path(path).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def alerts(files: dict[str, str], reference: Path) -> Iterator[AlertLog]:
    """The stable rules' live source, started once the targets exist."""
    with live_kernel_source(stable_rules_engine(reference)) as log:
        yield log


@pytest.fixture(scope="module")
def plain_alerts() -> dict[str, Alert]:
    """The alert of each target's plain spelling by target name, kept by the first case that saw it."""
    return {}


@dataclass(frozen=True)
class ChildRun:
    """The alerts raised from a child's start to a marker step after it: all of them, and the child's own."""

    tag: str
    alerts: list[Alert]

    def of(self, rule: str) -> list[Alert]:
        """The child's alerts of `rule` (its command line holds the tag)."""
        return [a for a in self.alerts if a.rule == rule and self.tag in str(a.output_fields.get("proc.cmdline"))]

    def explain(self, rule: str) -> str:
        """What a failed assertion shows: every alert of `rule` in the run, the child's or not."""
        return "; ".join(a.output[:300] for a in self.alerts if a.rule == rule) or f"no {rule} alert at all"


def run_child(log: AlertLog, code: str, path: str, flags: int, work: Path) -> ChildRun:
    """Run evasion `code` on `path` in a child; the alerts once every event of it has been evaluated."""
    tag = uuid.uuid4().hex[:12]
    seen = len(log.alerts)
    run_script(shlex.join([PY, "-c", CHILD, code, path, str(flags), str(work), tag]))
    marker = uuid.uuid4().hex[:12]
    run_script(marker_script(marker))
    wait_for_marker(log, marker)
    return ChildRun(tag, log.alerts[seen:])


def comparable(alert: Alert) -> dict[str, Any]:
    """The alert's fields save those naming how the file was opened (the command line, the syscall) and the
    ancestors (how far the state knows the test runner's own lineage is no concern of an evasion)."""
    return {k: v for k, v in alert.output_fields.items()
            if k not in ("proc.cmdline", "evt.type") and not k.startswith(("proc.aname", "proc.pname"))}


@pytest.mark.parametrize("evasion", list(EVASIONS))
@pytest.mark.parametrize("target_name", list(TARGETS))
def test_the_rule_fires_through_the_evasion_with_the_same_fields(
        target_name: str, evasion: str, alerts: AlertLog, files: dict[str, str], plain_alerts: dict[str, Alert],
        tmp_path: Path) -> None:
    target, path = TARGETS[target_name], files[target_name]
    if target_name not in plain_alerts:
        plain = run_child(alerts, EVASIONS["plain"].code, path, target.flags, tmp_path)
        assert len(plain.of(target.rule)) == 1, f"the plain open of {path}: {plain.explain(target.rule)}"
        assert plain.of(target.rule)[0].output_fields.get("fd.name") == path, plain.explain(target.rule)
        plain_alerts[target_name] = plain.of(target.rule)[0]
    expected = comparable(plain_alerts[target_name])

    case = EVASIONS[evasion]
    run = run_child(alerts, case.code, path, target.flags, tmp_path)
    found = run.of(target.rule)
    assert len(found) == 1 + (case.o_path_first and target.o_path_alerts), \
        f"{target.rule} through {evasion}: {run.explain(target.rule)}"
    for alert in found:
        assert comparable(alert) == expected, alert.output


@pytest.mark.parametrize("link", list(LINKS))
def test_reading_through_a_link_raises_the_link_rule(link: str, alerts: AlertLog, tmp_path: Path) -> None:
    """Making the link alerts on its own; the read through it is the sensitive read, counted as named by inode."""
    case = LINKS[link]
    assert alerts.source is not None
    named_before = alerts.source.metrics()["opens_named_by_inode"]
    run = run_child(alerts, case.code, "/etc/shadow", os.O_RDONLY, tmp_path)
    found = run.of(case.rule)
    assert len(found) == 1, f"{case.rule} through a {link}: {run.explain(case.rule)}"
    for key, value in case.fields.items():
        assert found[0].output_fields.get(key) == value.format(work=tmp_path), found[0].output
    assert [a.output_fields.get("fd.name") for a in run.of(TARGETS["read_shadow"].rule)] == ["/etc/shadow"]
    metrics = alerts.source.metrics()
    assert metrics["opens_named_by_inode"] > named_before and metrics["watched_files"] > 0


#: Making a file no scan has found yet (PATH: new) through a link: its directory is watched, not the file.
CREATIONS = {
    "through_a_symlinked_directory":
        "os.symlink(FOLDER, WORK + '/dir'); fd = os.open(WORK + '/dir/' + NAME, FLAGS, 0o644)",
    "through_a_dangling_symlink": "os.symlink(PATH, WORK + '/link'); fd = os.open(WORK + '/link', FLAGS, 0o644)",
}


@pytest.mark.parametrize("creation", list(CREATIONS))
@pytest.mark.parametrize("target_name", [name for name, target in TARGETS.items() if target.flags & os.O_CREAT])
def test_a_new_file_made_through_a_link_is_named_where_it_was_made(
        target_name: str, creation: str, alerts: AlertLog, tmp_path: Path) -> None:
    target = TARGETS[target_name]
    new = target.file(uuid.uuid4().hex[:12])
    try:
        run = run_child(alerts, CREATIONS[creation], new, target.flags, tmp_path)
        assert os.path.exists(new)
        found = run.of(target.rule)
        assert len(found) == 1, f"{target.rule} making {new} {creation}: {run.explain(target.rule)}"
        assert found[0].output_fields.get("fd.name") == new, found[0].output
    finally:
        Path(new).unlink(missing_ok=True)

"""Live kernel tests: skip only where BPF truly cannot load (printing why), run real behaviours in child
processes, and collect the alerts the engine raises on what the kernel source captured."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.alert import Alert
from agent.builtin_sources import syscall_buffer_types, syscall_rule_types
from agent.engine.engine import Engine
from agent.event import Event
from agent.syscall_prefilter import PlanCache
from sources.kernel.probe import probe_available
from sources.kernel.source import KernelSettings, KernelSource
from sources.kernel.state import live_state
from sources.kernel.state.cgroup_index import cgroup2_mount
from tests.support.agent_process import REPO
from tests.support.rules_harness import loaded_engine

MARKER_RULE = "Create Symlink Over Sensitive Files"


def require_probe() -> None:
    reason = probe_available()
    if reason is not None:
        pytest.skip(f"kernel probe unavailable: {reason}")


class AlertLog:
    """The engine's side of the kernel source in tests: evaluates each batch, keeps every alert."""

    def __init__(self, engine: Engine) -> None:
        #: Replaced to stand for a rules reload: the kernel source follows it (the prefilter too).
        self.engine = engine
        self.alerts: list[Alert] = []
        #: The kernel source feeding it, while live_kernel_source runs.
        self.source: KernelSource | None = None
        self._changed = threading.Condition()

    def put(self, events: Sequence[Event], on_done: Callable[[], None] | None = None, *,
            timeout_s: float | None = None) -> bool:
        found = [alert for event in events for alert in self.engine.process(event)]
        with self._changed:
            self.alerts.extend(found)
            self._changed.notify_all()
        if on_done is not None:
            on_done()
        return True

    offer = put

    def wait_for(self, match: Callable[[Alert], bool], *, since: int = 0, timeout_s: float = 2.0) -> Alert | None:
        """The first alert from index `since` on that `match`es, waiting up to `timeout_s` for it."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                hit = next((a for a in self.alerts[since:] if match(a)), None)
                remaining = deadline - time.monotonic()
                if hit is not None or remaining <= 0:
                    return hit
                self._changed.wait(remaining)


@contextmanager
def live_kernel_source(engine: Engine) -> Iterator[AlertLog]:
    """A kernel source capturing what `engine`'s syscall rules use, feeding an AlertLog."""
    require_probe()
    log = AlertLog(engine)

    plans = PlanCache()
    source = KernelSource(KernelSettings(ring_buffer_pages=1024),
                          rule_types=lambda: syscall_rule_types(log.engine),
                          buffer_types=lambda: syscall_buffer_types(log.engine),
                          new_state=lambda: live_state(hostname="live-test"),
                          prefilter=lambda: plans.plan(log.engine))
    log.source = source
    source.start(log)
    try:
        yield log
    finally:
        source.stop()


def stable_rules_engine(reference: Path) -> Engine:
    """Falco's stable rules and the shipped rules/syscall.yaml."""
    return loaded_engine(reference / "rules" / "falco_rules.yaml", REPO / "rules" / "syscall.yaml")


@pytest.fixture(scope="module", name="alerts")
def stable_rules_alerts(reference: Path) -> Iterator[AlertLog]:
    """The module's live kernel source with the stable_rules_engine (import it into a test module to use it as
    `alerts`)."""
    with live_kernel_source(stable_rules_engine(reference)) as log:
        yield log


@contextmanager
def docker_like_cgroup() -> Iterator[Path]:
    """A cgroup named like Docker's (`/docker/<64 hex>`): processes moved in look containerized."""
    root = cgroup2_mount()
    if root is None or not os.access(root, os.W_OK):
        pytest.skip("no writable cgroup2 hierarchy to make a container-like cgroup")
    path = root / "docker" / (uuid.uuid4().hex + uuid.uuid4().hex)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.05)


def run_script(script: str, *, cgroup: Path | None = None, timeout_s: float = 20.0) -> None:
    """Run a shell script in a child (inside `cgroup` when given, from its first instruction)."""
    if cgroup is not None:
        script = f"echo $$ > {cgroup / 'cgroup.procs'}\nexec /bin/sh -c {shlex.quote(script)}"
    subprocess.run(["/bin/sh", "-c", script], check=False, timeout=timeout_s,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def marker_script(tag: str) -> str:
    """A last step whose alert proves every earlier event of the script has been evaluated."""
    return f"ln -sf /etc/shadow /tmp/falco-agent-marker-{tag}; rm -f /tmp/falco-agent-marker-{tag}"


def wait_for_marker(log: AlertLog, tag: str, timeout_s: float = 5.0) -> None:
    hit = log.wait_for(lambda a: a.rule == MARKER_RULE and tag in str(a.output_fields.get("evt.arg.linkpath")),
                       timeout_s=timeout_s)
    assert hit is not None, "the marker step of the benign script never reached the engine"


def copy_binary(source: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    target.chmod(0o755)
    return target


def marker_read_rule(tmp_path: Path, rule: str, *, desc: str, condition: str, output: str) -> tuple[Path, Path]:
    """A file of random name and a rules file whose one rule fires when it is opened and `condition` holds:
    (the file, the rules file)."""
    marker = tmp_path / f"marker-{uuid.uuid4().hex[:12]}"
    marker.write_text("x")
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"- rule: {rule}\n  desc: {desc}\n"
                     f"  condition: evt.type in (open, openat, openat2) and fd.name = {marker}\n"
                     f"    and {condition}\n  output: {output}\n  priority: WARNING\n")
    return marker, rules

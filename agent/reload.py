"""Hot reload of rules: watch the rules and config files, validate a change in a dry run, hand the engine over.

A small thread polls the watched paths every `interval_s` (inode, size and mtime of each rules file, of each
`.yaml`/`.yml` in a rules directory, and of each configuration file read, `config_files` included), unless
`watch_config_files` is false; `request()` (SIGHUP) always forces a reload. A reload builds a
NEW Engine with the running engine's sources and loads every rules file into it; the running engine is not
touched. On success the new engine is offered to an `EngineSwap`, which the engine loop takes between two
batches: the batch being evaluated finishes on the old rules and the next one uses the new ones, so no event is
lost or evaluated twice. On failure the running rules stay, the errors are logged, and an internal alert names
the first one (`file:line CODE message`).

Config changes: only `rules_files`, `rules` (enable/disable commands), `rule_matching`, `priority` and
`append_output` are applied by a reload. Any other changed key is logged as `config_change_needs_restart`
(warning) and takes effect at the next start. A reload re-reads everything: no per-rule enable/disable state is
carried over from the previous rule set; the `rules` commands of the (re-read) configuration are applied to the new
one.

Write rules files atomically (write a temporary file, then rename it over the old one): a half-written file seen
by a poll fails to load (internal alert), and the next poll, seeing the file changed again, reloads it.

Nothing a reload meets ends reloading: an unexpected exception (a bug, an input the loader did not foresee) is
logged as `rules_reload_crashed` with its traceback and raises the same internal alert naming it; the running rules
stay, and the next change or SIGHUP reloads again. `failure()` (see agent.supervisor.FailureReporting) tells the
agent's health when rules changes are no longer applied: the thread ended anyway, or one poll or reload has been
busy for more than `stuck_after_s`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from agent.alert import Alert
from agent.config import AgentConfig, load_config
from agent.config.raw import yaml_entries
from agent.config.schema import IS_INTERNAL
from agent.engine.engine import Engine
from agent.engine_setup import load_engine
from agent.errors import ConfigError
from agent.internal_alerts import InternalAlerts

log = structlog.get_logger(__name__)
DEFAULT_RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
#: The configuration keys a reload applies; every other key needs a restart.
RULES_KEYS = ("rules_files", "rules", "rule_matching", "priority", "append_output")

Fingerprint = tuple[tuple[object, ...], ...]


def rules_entries(config: AgentConfig, extra_rules: Sequence[str]) -> list[str]:
    """The rules files and directories in use: those of `-r`, which replace the configured ones as Falco's `-r`
    does; else the configured ones; else the shipped `rules/`."""
    return list(extra_rules or config.rules_files) or [str(DEFAULT_RULES_DIR)]


def rules_paths(entries: Iterable[str]) -> list[Path]:
    """Files as given; a directory stands for its `.yaml` and `.yml` files in name order (as Falco reads one)."""
    out: list[Path] = []
    for entry in entries:
        path = Path(entry)
        out += yaml_entries(path) if path.is_dir() else [path]
    return out


def watched_paths(config: AgentConfig, *, config_path: str | None, extra_rules: Sequence[str]) -> list[str]:
    """The paths polled for changes: the configuration files read (the main one and those of `config_files`)
    and the rules files and directories in use."""
    config_files = list(config.loaded_files) or ([config_path] if config_path else [])
    return [*config_files, *rules_entries(config, extra_rules)]


def fingerprint(entries: Iterable[str]) -> Fingerprint:
    """What the watched paths look like now: any edit, rename-over, creation or removal changes it."""
    out: list[tuple[object, ...]] = []
    for entry in entries:
        path = Path(entry)
        if path.is_dir():
            out.append((entry, "dir", *(_stat(p) for p in yaml_entries(path))))
        else:
            out.append(_stat(path))
    return tuple(out)


def _stat(path: Path) -> tuple[object, ...]:
    try:
        st = os.stat(path)
    except OSError:
        return (str(path), None)
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class Reloaded:
    """A validated engine waiting to replace the running one."""

    engine: Engine
    files: tuple[str, ...]
    reason: str
    warnings: int = 0


class EngineSwap:
    """One pending engine: offered by the reload thread, taken by the engine loop between two batches.

    A newer offer replaces one not yet taken (the newest rules win). `take` is cheap when nothing is pending.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Reloaded | None = None

    def offer(self, reloaded: Reloaded) -> None:
        with self._lock:
            self._pending = reloaded

    def take(self) -> Reloaded | None:
        if self._pending is None:
            return None
        with self._lock:
            pending, self._pending = self._pending, None
        return pending


def swap_in(running: Engine, reloaded: Reloaded) -> Engine:
    """The engine to use from the next batch on; counters (and so evt.num) continue from the running one."""
    engine = reloaded.engine
    engine.stats = running.stats
    # Correlations whose definition did not change keep their state across the reload.
    engine.adopt_state(running)
    by_source: dict[str, int] = {}
    for rule in engine.rules:
        by_source[rule.source] = by_source.get(rule.source, 0) + 1
    log.info("rules_reloaded", reason=reloaded.reason, files=len(reloaded.files), rules=len(engine.rules),
             rules_by_source=by_source, warnings=reloaded.warnings)
    return engine


class RulesReloader:
    """Watches the rules and config files and offers validated engines to `swap`; see the module docstring."""

    def __init__(self, *, config: AgentConfig, config_path: str | None, overrides: Sequence[str],
                 extra_rules: Sequence[str], template: Engine, swap: EngineSwap, alerts: InternalAlerts,
                 emit: Callable[[Alert], None], interval_s: float = 1.0, stuck_after_s: float = 60.0,
                 seen: Fingerprint | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """`seen` is the fingerprint taken before the running rules were loaded (a change since is reloaded)."""
        self._config = config
        self._boot_config = config
        self._config_path = config_path
        self._overrides = list(overrides)
        self._extra_rules = list(extra_rules)
        self._template = template
        self._swap = swap
        self._alerts = alerts
        self._emit = emit
        self.interval_s = interval_s
        self.stuck_after_s = stuck_after_s
        self._clock = clock
        self._busy_since_s: float | None = None  # while the thread polls or reloads
        self._wake = threading.Event()
        self._is_forced = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen = fingerprint(self.watched()) if seen is None else seen

    def watched(self) -> list[str]:
        return watched_paths(self._config, config_path=self._config_path, extra_rules=self._extra_rules)

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="rules-reload", daemon=True)
        # Published only once running: failure() takes a thread that is not alive for one that died.
        thread.start()
        self._thread = thread

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def request(self) -> None:
        """Reload now even if nothing changed (SIGHUP); safe to call from a signal handler."""
        self._is_forced = True
        self._wake.set()

    def failure(self) -> str | None:
        """Why rules changes are no longer applied: the thread ended, or is stuck in one poll or reload.

        None before `start()`, after `stop()` and while it works: rules that fail to load are not a failure of the
        reloader (they raise an internal alert, and the next change is reloaded).
        """
        thread, busy_since_s = self._thread, self._busy_since_s
        if thread is None or self._stopping.is_set():
            return None
        if not thread.is_alive():
            return "the rules reload thread ended"
        if busy_since_s is not None and (busy_s := self._clock() - busy_since_s) > self.stuck_after_s:
            return f"the rules reload thread has been busy for {busy_s:.0f} s (more than {self.stuck_after_s:g} s)"
        return None

    def _run(self) -> None:
        while not self._stopping.is_set():
            # `watch_config_files: false`: no polling, only request() (SIGHUP) reloads.
            self._wake.wait(self.interval_s if self._config.watch_config_files else None)
            self._wake.clear()
            if self._stopping.is_set():
                return
            is_forced, self._is_forced = self._is_forced, False
            if not is_forced and not self._config.watch_config_files:
                continue  # a wake left from before polling was turned off by a reload
            reason = "signal" if is_forced else "file_changed"
            self._busy_since_s = self._clock()
            try:
                self._poll(reason, is_forced=is_forced)
            except Exception as exc:  # the thread's boundary: nothing a reload meets may end reloading for good
                self._crashed(exc, reason=reason)
            finally:
                self._busy_since_s = None

    def _poll(self, reason: str, *, is_forced: bool) -> None:
        watched = self.watched()
        seen = fingerprint(watched)
        if is_forced or seen != self._seen:
            self._seen = seen  # taken before loading: an edit during the load (or a crash) triggers another reload
            self.reload(reason=reason)
            if self.watched() != watched:  # rules_files changed: watch the new set from now on
                self._seen = fingerprint(self.watched())

    def _crashed(self, exc: Exception, *, reason: str) -> None:
        error = f"{type(exc).__name__}: {exc}"
        log.exception("rules_reload_crashed", reason=reason, error=error,
                      hint="the running rules are kept; the next change or SIGHUP reloads again")
        files = rules_entries(self._config, self._extra_rules)  # no I/O here: the crash may have come from it
        self._emit(self._alerts.rules_reload_crashed(error, reason=reason, files=files))

    def reload(self, *, reason: str) -> bool:
        """Dry-run the rules (and config) as they are on disk now; offer the new engine when they load."""
        config = self._config
        if self._config_path is not None:
            try:
                config = load_config(self._config_path, overrides=self._overrides)
            except ConfigError as exc:
                log.error("config_reload_failed", file=self._config_path, error=str(exc))
                self._emit(self._alerts.config_reload_failed(str(exc), file=self._config_path))
                return False
            self._warn_restart_needed(config)
        files = rules_paths(rules_entries(config, self._extra_rules))
        engine, result = load_engine(config, files, sources=self._template.sources.values(),
                                     hostname=self._template.hostname)
        names = [str(f) for f in files]
        if not result.successful:
            for problem in result.errors:
                log.error("rules_reload_failed", problem=problem.as_text(), hint="the running rules are kept")
            self._emit(self._alerts.rules_reload_failed(result.errors, files=names))
            return False
        self._config = config
        self._swap.offer(Reloaded(engine, tuple(names), reason, warnings=len(result.warnings)))
        return True

    def _warn_restart_needed(self, config: AgentConfig) -> None:
        changed = [f.name for f in dataclasses.fields(AgentConfig)
                   if f.name not in RULES_KEYS and not f.metadata.get(IS_INTERNAL)
                   and getattr(config, f.name) != getattr(self._boot_config, f.name)]
        if changed:
            log.warning("config_change_needs_restart", file=self._config_path, keys=changed,
                        hint=f"only {', '.join(RULES_KEYS)} are applied by a reload")

"""Alerts the agent raises about itself (source `internal`): failed reloads, failed sources, dropped events.

They reach every output like rule alerts, but never pass through the engine: no rule matches them and no
priority threshold hides them. Their `output_fields` use `internal.*` names so that consumers can filter on them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.alert import Alert
from agent.engine.load_result import LoadProblem
from agent.priority import Priority
from agent.source import DropNotice

SOURCE = "internal"
RULES_RELOAD_FAILED = "Falco Agent Rules Reload Failed"
SOURCE_FAILED = "Falco Agent Source Failed"
SOURCE_RESTARTED = "Falco Agent Source Restarted"
EVENTS_DROPPED = "Falco Agent Events Dropped"
METRICS_SNAPSHOT = "Falco internal: metrics snapshot"
_TAGS = ("falco_agent", "internal")


class InternalAlerts:
    """Builds internal alerts stamped with the agent's hostname and the current time."""

    def __init__(self, *, hostname: str, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.hostname = hostname
        self._clock_ns = clock_ns

    def rules_reload_failed(self, problems: list[LoadProblem], *, files: list[str]) -> Alert:
        """The running rules were kept because the changed rules have errors; names the first one."""
        first = problems[0]
        where = first.location
        error = f"{first.code.value}: {first.message}"
        return self._alert(RULES_RELOAD_FAILED, Priority.ERROR,
                           f"Rules reload failed, the running rules are kept "
                           f"(error={where.file}:{where.line} {error} errors={len(problems)})",
                           {"internal.file": where.file, "internal.line": where.line, "internal.code": first.code.value,
                            "internal.error": first.as_text(), "internal.errors": len(problems),
                            "internal.files": ",".join(files)})

    def rules_reload_crashed(self, error: str, *, reason: str, files: list[str]) -> Alert:
        """A reload ended on an unexpected exception rather than on errors in the rules; the running rules are kept."""
        return self._alert(RULES_RELOAD_FAILED, Priority.ERROR,
                           f"Rules reload failed on an internal error, the running rules are kept "
                           f"(reason={reason} error={error})",
                           {"internal.error": error, "internal.errors": 1, "internal.files": ",".join(files)})

    def config_reload_failed(self, error: str, *, file: str) -> Alert:
        """The changed configuration file does not load; the running configuration and rules are kept."""
        return self._alert(RULES_RELOAD_FAILED, Priority.ERROR,
                           f"Configuration reload failed, the running rules are kept (file={file} error={error})",
                           {"internal.file": file, "internal.error": error, "internal.errors": 1})

    def source_failed(self, source: str, error: str, *, retry_in_s: float) -> Alert:
        """A source stopped on its own or could not start: its events are not seen until it restarts."""
        return self._alert(SOURCE_FAILED, Priority.CRITICAL,
                           f"Source failed, its events are not evaluated until it restarts "
                           f"(source={source} error={error} retry_in_s={retry_in_s:g})",
                           {"internal.source": source, "internal.error": error, "internal.retry_in_s": retry_in_s})

    def source_restarted(self, source: str, *, attempts: int) -> Alert:
        """A failed source runs again."""
        return self._alert(SOURCE_RESTARTED, Priority.NOTICE,
                           f"Source restarted (source={source} attempts={attempts})",
                           {"internal.source": source, "internal.attempts": attempts})

    def events_dropped(self, stage: str, count: int, *, total: int) -> Alert:
        """`count` items were dropped at `stage` (an output name, or the queue) since the last report."""
        return self._alert(EVENTS_DROPPED, Priority.WARNING,
                           f"Events dropped (stage={stage} count={count} total={total})",
                           {"internal.stage": stage, "internal.count": count, "internal.total": total})

    def input_dropped(self, source: str, notice: DropNotice) -> Alert:
        """A source lost input before the agent could read it; named like Falco's "syscall event drop"."""
        return self._alert(f"Falco internal: {notice.what}", Priority.WARNING,
                           f"Falco internal: {notice.what}. {notice.lost} events lost in the last "
                           f"{notice.window_s:.0f}s (source={source} worst_second_lost_ratio={notice.worst_ratio:.4f} "
                           f"lost_total={notice.lost_total})",
                           {"internal.source": source, "internal.count": notice.lost,
                            "internal.delivered": notice.delivered, "internal.total": notice.lost_total,
                            "internal.worst_ratio": round(notice.worst_ratio, 6)})

    def metrics_snapshot(self, fields: dict[str, object]) -> Alert:
        """Falco's periodic metrics snapshot (`metrics.output_rule`): the metrics are its output fields."""
        return self._alert(METRICS_SNAPSHOT, Priority.INFORMATIONAL, "Falco metrics snapshot", fields)

    def _alert(self, rule: str, priority: Priority, output: str, fields: dict[str, object]) -> Alert:
        return Alert(rule=rule, priority=priority, source=SOURCE, ts_ns=self._clock_ns(), output=output,
                     output_fields=fields, hostname=self.hostname, tags=_TAGS)

"""Internal alerts: source `internal`, Falco-style names, and fields naming what went wrong."""

from __future__ import annotations

from agent.internal_alerts import EVENTS_DROPPED, SOURCE_RESTARTED, InternalAlerts
from agent.priority import Priority
from agent.source import DropNotice


class TestInternalAlerts:
    def test_alerts_carry_source_hostname_time_and_render_as_falco_json(self) -> None:
        """An internal alert prints like any Falco alert, with source `internal` and `internal.*` fields."""
        alerts = InternalAlerts(hostname="node-1", clock_ns=lambda: 1_700_000_000_000_000_000)
        alert = alerts.source_restarted("k8s_audit", attempts=2)
        doc = alert.falco_json()
        assert (doc["rule"], doc["source"], doc["hostname"], doc["priority"]) == (
            SOURCE_RESTARTED, "internal", "node-1", "Notice")
        assert doc["output_fields"]["internal.source"] == "k8s_audit"
        assert "source=k8s_audit attempts=2" in doc["output"]

    def test_events_dropped_names_the_stage_and_counts(self) -> None:
        """A drop report says where, how many since the last report, and how many in all."""
        alert = InternalAlerts(hostname="n").events_dropped("output:http", 5, total=12)
        assert alert.rule == EVENTS_DROPPED and alert.priority is Priority.WARNING
        assert alert.output_fields == {"internal.stage": "output:http", "internal.count": 5, "internal.total": 12}

    def test_input_lost_upstream_is_named_like_falcos_syscall_event_drop(self) -> None:
        """Syscalls the kernel could not hand over give Falco's rule name, with the counts of the window."""
        notice = DropNotice("syscall event drop", lost=300, delivered=700, lost_total=1300, worst_ratio=0.3,
                            window_s=30.0)
        alert = InternalAlerts(hostname="n").input_dropped("kernel", notice)
        assert alert.rule == "Falco internal: syscall event drop" and alert.source == "internal"
        assert alert.output_fields["internal.count"] == 300 and alert.output_fields["internal.total"] == 1300
        assert "300 events lost in the last 30s" in alert.output and "source=kernel" in alert.output

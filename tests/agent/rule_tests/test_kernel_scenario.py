"""The compact kernel scenario form: each line becomes real kernel events carrying its pod's fields, and a bad line
is refused naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from agent.event import Event
from agent.rule_tests.kernel_scenario import ScenarioError, pod, scenario_events, time_ns
from sources.kernel.fields import syscall_source


def extract(event: Event, field: str) -> Any:
    name, _, arg = field.partition("[")
    found = syscall_source().fields.resolve(name, arg.rstrip("]") or None)
    assert found is not None, field
    return found[0].bind(found[1])(event)


LINE: dict[str, Any] = {"time": "2024-06-03T10:02:00Z", "pod": "payments/api-1",
                        "run": ["/usr/bin/curl", "http://198.51.100.20/x"], "connect": "198.51.100.20:80"}


class TestScenarioEvents:
    def test_a_line_is_an_exec_then_its_syscalls_in_the_pods_container(self) -> None:
        """clone, execve, socket and connect, the last at `time`, with the pod's namespace, name and container."""
        events = list(scenario_events([LINE]))
        assert [e.type for e in events] == ["clone", "execve", "socket", "connect"]
        last = events[-1]
        assert last.ts_ns == time_ns(LINE["time"])
        assert {f: extract(last, f) for f in ("k8s.ns.name", "k8s.pod.name", "container.id", "proc.name",
                                              "proc.cmdline", "fd.name")} == {
            "k8s.ns.name": "payments", "k8s.pod.name": "api-1", "container.id": pod("payments/api-1").short_id,
            "proc.name": "curl", "proc.cmdline": "curl http://198.51.100.20/x",
            "fd.name": "0.0.0.0:0->198.51.100.20:80"}

    def test_fails_makes_the_last_syscall_return_the_errno(self) -> None:
        """`fails: ENOENT` makes the open fail with that errno."""
        [*_, opened] = scenario_events([{"time": "2024-06-03T10:02:00Z", "pod": "a/b", "run": ["/bin/cat"],
                                         "open": "/etc/shadow", "fails": "ENOENT"}])
        assert (opened.type, extract(opened, "evt.res"), extract(opened, "fd.name")) == ("openat", "ENOENT",
                                                                                         "/etc/shadow")

    @pytest.mark.parametrize(("line", "message"), [
        ({"pod": "a/b", "time": "2024-06-03T10:02:00Z", "run": ["/bin/sh"], "exec": "x"}, "unknown keys ['exec']"),
        ({"pod": "ab", "time": "2024-06-03T10:02:00Z", "run": ["/bin/sh"]}, "pod: expected 'namespace/name'"),
        ({"pod": "a/b", "time": "noon", "run": ["/bin/sh"]}, "time: expected an ISO 8601 time"),
        ({"pod": "a/b", "time": "2024-06-03T10:02:00Z", "run": "/bin/sh"}, "'run' must be a non-empty list"),
        ({"pod": "a/b", "time": "2024-06-03T10:02:00Z", "run": ["/bin/sh"], "fails": "ENOENT"}, "'fails' needs"),
        ({"pod": "a/b", "time": "2024-06-03T10:02:00Z", "run": ["/bin/sh"], "connect": "x:y"}, "connect: expected"),
    ])
    def test_a_bad_line_is_refused_naming_the_key(self, line: dict[str, Any], message: str) -> None:
        """A kernel line that does not describe a scenario raises ScenarioError naming the key at fault."""
        with pytest.raises(ScenarioError, match="kernel line 1") as caught:
            list(scenario_events([line]))
        assert message in str(caught.value)

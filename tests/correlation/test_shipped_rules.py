"""rules/correlation.yaml on recorded mixed-source streams: positives fire, near misses stay quiet.

Kernel steps are real kernel events: the streams' kernel lines become records applied to the kernel
source's state and written to a capture, which is replayed next to the audit and CloudTrail lines
(see the README section "Testing rules"). The streams and what each must raise are the cases of
rules/tests/correlation.tests.yaml; here each stream must also raise nothing else."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from agent.builtin_sources import new_engine, recorded_replayers
from agent.engine.engine import Engine
from agent.event import Event
from agent.rule_tests.cases import cases_files_for, load_cases
from tests.correlation.conftest import SHIPPED, STREAMS, mixed_engine, replay
from tests.sources.kernel.state_fixtures import extract
from tests.support.kernel_scenarios import KERNEL, kernel_pods, pod, stream_files, stream_lines, time_ns


def _expected() -> dict[str, dict[str, int]]:
    """Per stream (file name without .jsonl), the alerts its case expects: rule name to count, `{}` for none."""
    out = {}
    for case in load_cases(cases_files_for(SHIPPED)[0]):
        assert case.input.file is not None, case.label
        expected = {case.rule: case.expect.count or 1} if case.expect.matches else {}
        out[case.input.file.name.removesuffix(".jsonl")] = expected
    return out


EXPECTED = _expected()
KERNEL_STREAMS = sorted(s for s in EXPECTED if any(is_kernel for is_kernel, _ in stream_lines(STREAMS / f"{s}.jsonl")))


@pytest.mark.parametrize("stream", sorted(EXPECTED))
def test_stream_raises_exactly_the_expected_alerts(stream: str, shipped: Engine) -> None:
    """Each recorded stream raises the alerts its case expects, and nothing else."""
    alerts = replay(shipped, STREAMS / f"{stream}.jsonl")
    assert dict(Counter(a.rule for a in alerts)) == EXPECTED[stream]


def test_every_stream_has_an_expectation() -> None:
    """A stream file without a case would silently never run."""
    assert {p.name.removesuffix(".jsonl") for p in STREAMS.glob("*.jsonl")} == set(EXPECTED)


def test_every_shipped_correlation_has_a_positive_and_near_misses() -> None:
    """Each shipped correlation fires on at least one stream and stays quiet on at least two others."""
    engine = mixed_engine(SHIPPED.read_text())
    for correlation in engine.correlations:
        firing = [s for s, expected in EXPECTED.items() if correlation.name in expected]
        quiet = [s for s in EXPECTED if s.split(".")[0] in {f.split(".")[0] for f in firing} and s not in firing]
        assert firing and len(quiet) >= 2, correlation.name


def test_alert_output_names_fields_of_both_steps(shipped: Engine) -> None:
    """The alert text takes the user from the audit step and the command line and container from the kernel step."""
    [alert] = replay(shipped, STREAMS / "exec_shell.positive.jsonl")
    [in_pod] = kernel_pods(STREAMS / "exec_shell.positive.jsonl")
    assert "k8s_user=alice@example.com" in alert.output and "cmdline=bash -i" in alert.output
    assert alert.output_fields["session.ka.user.name"] == "alice@example.com"
    assert alert.output_fields["activity.proc.name"] == "bash"
    assert alert.output_fields["activity.container.id"] == in_pod.short_id and len(in_pod.short_id) == 12
    assert alert.source == "syscall" and alert.tags == tuple(sorted(alert.tags))


def test_outbound_connection_names_the_socket_as_the_kernel_sees_it(shipped: Engine) -> None:
    """A connect's fd.name has the server end; the local end is unknown to the tracepoints (0.0.0.0:0)."""
    [alert] = replay(shipped, STREAMS / "exec_outbound.positive.jsonl")
    assert alert.output_fields["activity.fd.name"] == "0.0.0.0:0->198.51.100.20:80"
    assert alert.output_fields["activity.evt.type"] == "connect"


@pytest.mark.parametrize("stream", KERNEL_STREAMS)
def test_kernel_lines_replay_with_the_fields_of_their_pod(stream: str, tmp_path: Path) -> None:
    """Every kernel line's last record replays at its time with its pod's namespace, name and container, so a
    near miss is quiet for the reason its name gives, never for missing metadata."""
    path = STREAMS / f"{stream}.jsonl"
    lines = [orjson.loads(raw)[KERNEL] for is_kernel, raw in stream_lines(path) if is_kernel]
    [replayer] = recorded_replayers(hostname="node-1")
    results = [event for file in stream_files(path, tmp_path) if replayer.claims(file)
               for event in replayer.events(file)]
    events = [event for event in results if isinstance(event, Event)]
    assert events == results, "a recorded line did not decode"
    for line in lines:
        [event] = [e for e in events if e.ts_ns == time_ns(line["time"])]
        where = pod(line["pod"])
        seen = {name: extract(event, name) for name in ("k8s.ns.name", "k8s.pod.name", "container.id", "proc.name")}
        assert seen == {"k8s.ns.name": where.namespace, "k8s.pod.name": where.name,
                        "container.id": where.short_id, "proc.name": line["run"][0].rsplit("/", 1)[-1]}, line


def test_absence_alert_is_timed_at_its_deadline(shipped: Engine) -> None:
    """A confirmed absence is reported at the end of the time the missing event had (StopLogging + 15m)."""
    [alert] = replay(shipped, STREAMS / "trail_stopped.positive.jsonl")
    assert alert.falco_json()["time"].startswith("2024-08-01T10:15:00")


def test_node_egress_addresses_silence_the_metadata_correlation(tmp_path: Path) -> None:
    """Appending your nodes' addresses to corr_node_egress_ips keeps their own calls quiet."""
    local = "- list: corr_node_egress_ips\n  items: [198.51.100.99]\n  override:\n    items: append\n"
    engine = mixed_engine(SHIPPED.read_text(), local)
    assert replay(engine, STREAMS / "imds_credentials.positive.jsonl") == []


def test_shipped_file_loads_next_to_the_other_shipped_rules() -> None:
    """rules/ loads whole, correlations included, with no error and no warning."""
    engine = new_engine()
    result = engine.load_rules_files(sorted((SHIPPED.parent).glob("*.yaml")))
    assert result.successful and not result.warnings, result.as_text()
    assert len(engine.correlations) == 7

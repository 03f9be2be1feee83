"""The plugin libraries the plugin tests load, a sink that keeps what a live source hands over, and the k8s audit
file source the agent-process tests run beside plugin sources."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from plugin_build import build_all, compile_command, dummy_c_command

from agent.event import Event
from agent.event_queue import Done

C_SOURCES = Path(__file__).resolve().parents[1] / "plugins" / "c"

SECRET_DELETED_RULE = """\
- rule: Secret Deleted
  desc: someone deleted a secret
  condition: ka.verb = delete and ka.target.resource = secrets
  output: deleted by %ka.user.name
  priority: WARNING
  source: k8s_audit
"""
#: A k8s audit event that raises Secret Deleted.
AUDIT = {
    "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": "a-1",
    "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/default/secrets/s", "verb": "delete",
    "user": {"username": "alice"}, "objectRef": {"resource": "secrets", "namespace": "default", "name": "s"},
    "responseStatus": {"code": 200},
    "requestReceivedTimestamp": "2024-05-01T10:00:00.000000Z", "stageTimestamp": "2024-05-01T10:00:00.123456Z",
}


@dataclass(frozen=True)
class Built:
    dummy_c: Path
    source: Path
    extractor: Path
    extractor_k8s: Path  # the extractor, declaring the built-in source k8s_audit as well
    not_a_plugin: Path
    too_new: Path


def build_test_plugins(reference: Path, out: Path) -> Built:
    """dummy_c and the C plugins of tests/plugins/c, compiled into `out`."""
    dummy_c, dummy_command = dummy_c_command(reference, out)
    built = Built(dummy_c=dummy_c, source=out / "libsource.so", extractor=out / "libextractor.so",
                  extractor_k8s=out / "libextractor_k8s.so",
                  not_a_plugin=out / "libnot_a_plugin.so", too_new=out / "libtoo_new.so")
    build_all({
        "dummy_c": dummy_command,
        "source": compile_command(C_SOURCES / "source.c", built.source),
        "extractor": compile_command(C_SOURCES / "extractor.c", built.extractor),
        "extractor_k8s": compile_command(C_SOURCES / "extractor.c", built.extractor_k8s,
                                         defines=('EXTRACT_SOURCES="[\\"testsrc\\", \\"k8s_audit\\"]"',)),
        "not_a_plugin": compile_command(C_SOURCES / "not_a_plugin.c", built.not_a_plugin),
        # The same source plugin, asking for an API minor this agent does not implement.
        "too_new": compile_command(C_SOURCES / "source.c", built.too_new, defines=('REQUIRED_API="3.13.0"',)),
    })
    return built


class ListSink:
    """An EventSink that keeps every event; it always has room."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def offer(self, events: Sequence[Event], on_done: Done | None = None) -> bool:
        self.events += events
        return True

    def put(self, events: Sequence[Event], on_done: Done | None = None, *, timeout_s: float | None = None) -> bool:
        self.events += events
        return True


def audit_file_config(tmp_path: Path, rules: str) -> tuple[str, Path]:
    """`rules` written to rules.yaml, and the agent.yaml lines loading it with the k8s audit source reading an empty
    audit.log (its webhook off); returns those lines and the log."""
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(rules)
    audit_log = tmp_path / "audit.log"
    audit_log.write_text("")
    return f"""\
rules_files: [{rules_file}]
sources:
  k8s_audit:
    webhook: {{enabled: false}}
    files: {{paths: [{audit_log}], poll_interval_s: 0.05}}
""", audit_log


def append_audit(audit_log: Path) -> None:
    """Append AUDIT to the log the agent's k8s audit file source reads."""
    with audit_log.open("a") as log:
        log.write(json.dumps(AUDIT) + "\n")

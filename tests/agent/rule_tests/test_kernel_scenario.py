"""The compact kernel scenario form: each line becomes real kernel events carrying its pod's or its host process's
fields, each syscall key its event, and a bad line is refused naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.event import Event
from agent.rule_tests.kernel_scenario import ScenarioError, pod, scenario_events, time_ns
from sources.kernel.capture import write_capture
from sources.kernel.fields import syscall_source

REPO = Path(__file__).resolve().parents[3]


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
        ({"host": True, "user": "alice", "run": ["/bin/sh"]}, "user describe the parent chain: give 'parent'"),
        ({"host": True, "pod": "a/b", "run": ["/bin/sh"]}, "say where the process runs"),
        ({"run": ["/bin/sh"]}, "say where the process runs"),
        ({"host": True, "image": "x", "run": ["/bin/sh"]}, "describe a pod's container: give 'pod'"),
        ({"host": True, "run": ["/bin/sh"], "open": {"path": "/x", "flags": "O_BOGUS"}}, "unknown flag 'O_BOGUS'"),
        ({"host": True, "run": ["/bin/sh"], "fork": True}, "give 'run' or 'fork', not both"),
        ({"host": True, "parent": "bash"}, "nothing happens"),
        ({"host": True, "memfd_create": "x", "ptrace": "PTRACE_TRACEME"}, "'memfd_create' describes the program"),
        ({"host": True, "ptrace": "PTRACE_BOGUS"}, "ptrace: expected PTRACE_REQUEST"),
        ({"host": True, "renameat2": "/a"}, "'renameat2' must be [oldpath, newpath]"),
        ({"pod": "a/b", "container_id": "xyz", "run": ["/bin/sh"]}, "container_id: expected 12 to 64"),
    ])
    def test_a_bad_line_is_refused_naming_the_key(self, line: dict[str, Any], message: str) -> None:
        """A kernel line that does not describe a scenario raises ScenarioError naming the key at fault."""
        with pytest.raises(ScenarioError, match="kernel line 1") as caught:
            list(scenario_events([line]))
        assert message in str(caught.value)


ALICE: dict[str, Any] = {"host": True, "parent": "sshd>bash", "user": "alice", "tty": 34816, "loginuid": 1000,
                         "cwd": "/home/alice"}
WEB: dict[str, Any] = {"pod": "prod/web-0", "image": "docker.io/library/nginx:1.25", "container": "web",
                       "container_id": "aaaaaaaaaaaa"}


def last_event(*lines: dict[str, Any]) -> Event:
    *_, last = scenario_events(list(lines))
    return last


def fields(event: Event, *names: str) -> dict[str, Any]:
    return {name: extract(event, name) for name in names}


class TestHostProcesses:
    def test_the_parent_chain_gives_ancestry_user_terminal_and_directory(self) -> None:
        """A host process below `sshd>bash` has them as parent and grandparent, and the chain's user, tty, loginuid
        and working directory."""
        opened = last_event({**ALICE, "run": ["/usr/bin/tee", "-a"],
                             "open": {"path": "/etc/ld.so.preload", "flags": "O_WRONLY|O_CREAT"}})
        assert fields(opened, "evt.type", "proc.name", "proc.cmdline", "proc.pname", "proc.aname[2]", "user.name",
                      "user.uid", "user.loginuid", "proc.tty", "proc.cwd", "container.id", "fd.name",
                      "evt.arg.flags", "evt.is_open_write") == {
            "evt.type": "openat", "proc.name": "tee", "proc.cmdline": "tee -a", "proc.pname": "bash",
            "proc.aname[2]": "sshd", "user.name": "alice", "user.uid": 1000, "user.loginuid": 1000,
            "proc.tty": 34816, "proc.cwd": "/home/alice/", "container.id": "host", "fd.name": "/etc/ld.so.preload",
            "evt.arg.flags": "O_CREAT|O_WRONLY", "evt.is_open_write": True}

    def test_ancestors_are_full_argvs_and_without_run_the_last_one_acts(self) -> None:
        """`/usr/bin/dpkg>/bin/sh -c x` names each ancestor's argv; with no `run`, the chain's last process makes the
        syscall itself."""
        renamed = last_event({"host": True, "parent": "/usr/bin/dpkg>/bin/sh -c x", "renameat2": ["/tmp/a", "/bin/a"]})
        assert fields(renamed, "evt.type", "proc.name", "proc.cmdline", "proc.pname", "proc.exepath",
                      "evt.arg.newpath", "evt.res") == {
            "evt.type": "renameat2", "proc.name": "sh", "proc.cmdline": "sh -c x", "proc.pname": "dpkg",
            "proc.exepath": "/bin/sh", "evt.arg.newpath": "/bin/a", "evt.res": "SUCCESS"}

    def test_init_acts_when_no_parent_or_program_is_given(self) -> None:
        """A line with neither `parent` nor `run` is init's own syscall; connect takes a local end, dup2 the line's
        socket."""
        events = list(scenario_events([{"host": True, "connect": "192.0.2.1:41000->198.51.100.7:5000", "dup2": 0}]))
        assert [e.type for e in events] == ["socket", "connect", "dup2"]
        assert fields(events[-1], "proc.name", "fd.name", "fd.type", "evt.rawres") == {
            "proc.name": "systemd", "fd.name": "192.0.2.1:41000->198.51.100.7:5000", "fd.type": "ipv4",
            "evt.rawres": 0}

    @pytest.mark.parametrize(("extra", "expected"), [
        ({"ptrace": ["PTRACE_ATTACH", 100]}, {"evt.type": "ptrace", "evt.arg.request": "PTRACE_ATTACH",
                                              "evt.arg.pid": "sshd"}),
        ({"symlinkat": ["/etc/shadow", "/tmp/s"]}, {"evt.type": "symlinkat", "evt.arg.target": "/etc/shadow",
                                                    "evt.arg.linkpath": "/tmp/s"}),
        ({"linkat": ["/etc/sudoers", "/tmp/y"], "fails": "EPERM"}, {"evt.type": "linkat", "evt.res": "EPERM"}),
        ({"link": ["/tmp/x", "/usr/bin/x"]}, {"evt.type": "link", "evt.arg.newpath": "/usr/bin/x"}),
        ({"mkdir": "/usr/sbin/.h"}, {"evt.type": "mkdir", "evt.arg.path": "/usr/sbin/.h"}),
        ({"creat": "/var/log/wtmp"}, {"evt.type": "creat", "fd.name": "/var/log/wtmp"}),
        ({"socket": "AF_PACKET"}, {"evt.type": "socket", "evt.arg.domain": "AF_PACKET"}),
        ({"run": ["/tmp/loader"], "finit_module": "/tmp/r.ko"}, {"evt.type": "finit_module", "fd.name": "/tmp/r.ko"}),
        ({"run": ["/proc/self/fd/3"], "memfd_create": "payload"}, {
            "evt.type": "execve", "proc.exepath": "memfd:payload", "proc.is_exe_from_memfd": True}),
        ({"fork": True, "ptrace": "PTRACE_TRACEME"}, {"evt.type": "ptrace", "proc.name": "bash", "proc.pname": "bash"}),
    ])
    def test_each_syscall_key_makes_its_event(self, extra: dict[str, Any], expected: dict[str, Any]) -> None:
        assert fields(last_event({**ALICE, **extra}), *expected) == expected


class TestPodContainer:
    def test_a_pod_line_may_name_its_image_container_and_id(self) -> None:
        """image, container and container_id describe the pod's container; later lines of the pod inherit them."""
        first, later = {**WEB, "run": ["/bin/true"]}, {"pod": "prod/web-0", "parent": "runc", "tty": 34817,
                                                       "run": ["/bin/bash"]}
        started = last_event(first, later)
        assert fields(started, "container.id", "container.name", "container.image.repository", "k8s.pod.name",
                      "proc.pname", "proc.tty") == {
            "container.id": "aaaaaaaaaaaa", "container.name": "web",
            "container.image.repository": "docker.io/library/nginx", "k8s.pod.name": "web-0", "proc.pname": "runc",
            "proc.tty": 34817}

    def test_exe_layer_says_where_the_executable_came_from(self) -> None:
        upper, lower = (last_event({**WEB, "run": ["/tmp/xmrig"], "exe_layer": layer}) for layer in ("upper", "lower"))
        assert fields(upper, "proc.is_exe_upper_layer", "evt.arg.flags") == {"proc.is_exe_upper_layer": True,
                                                                             "evt.arg.flags": "EXE_UPPER_LAYER"}
        assert extract(lower, "proc.is_exe_upper_layer") is False

    def test_a_pod_described_two_ways_is_refused(self) -> None:
        with pytest.raises(ScenarioError, match="kernel line 2: pod prod/web-0: image 'b' differs from"):
            list(scenario_events([{**WEB, "run": ["/bin/true"]}, {**WEB, "image": "b", "run": ["/bin/true"]}]))


def test_a_capture_of_a_scenario_is_a_case_input_like_the_lines(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The same scenario, written as a kernel capture (`file:`) or as lines (`events:`), passes the same case."""
    lines = [{**ALICE, "run": ["/usr/bin/cat"], "open": "/etc/shadow"}]
    with write_capture(tmp_path / "read.capture.jsonl") as writer:
        for _event in scenario_events(lines, observer=writer):
            pass
    expectation = ("  rule: Sensitive File Read By Unexpected Program\n  expect: match\n  count: 1\n"
                   "  output_fields: {user.name: alice, 'proc.aname[2]': sshd, fd.name: /etc/shadow}\n")
    cases = tmp_path / "syscall.tests.yaml"
    cases.write_text(f"- case: capture\n  file: read.capture.jsonl\n{expectation}"
                     f"- case: lines\n  events: {json.dumps([{'kernel': line} for line in lines])}\n{expectation}")
    code = main(["rules", "test", "-r", str(REPO / "rules" / "syscall.yaml"), str(cases)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "2 cases: 2 passed" in out

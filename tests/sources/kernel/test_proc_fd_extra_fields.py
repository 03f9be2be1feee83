"""fd.*proto, and the process figures, environment, cgroup and lineage fields libsinsp keeps per thread."""

from __future__ import annotations

from agent.fields import AnyOf
from sources.kernel.state.sockaddr import AF_INET
from tests.sources.kernel.state_fixtures import FakeHost, Stream, default_host, extract, inet, snapshot

SOCK_STREAM = 1


class TestPortProtocols:
    def test_client_connection(self) -> None:
        """With port resolution off (as Falco runs libsinsp) each side's protocol is its port number as text."""
        s = Stream()
        s.record("socket", 200, res=3, domain=AF_INET, type=SOCK_STREAM, proto=0)
        event = s.record("connect", 200, fd=3, addr=inet("93.184.216.34", 443), local_addr=inet("10.0.0.5", 51000))
        assert [extract(event, f"fd.{end}proto") for end in "cslr"] == ["51000", "443", "51000", "443"]
        proto = extract(event, "fd.proto")
        assert isinstance(proto, AnyOf) and set(proto.values) == {443, 51000}

    def test_listening_socket(self) -> None:
        """A listening socket has no connected ports: client and server give the empty text, local/remote none."""
        s = Stream()
        s.record("socket", 200, res=3, domain=AF_INET, type=SOCK_STREAM, proto=0)
        bind = s.record("bind", 200, fd=3, addr=inet("0.0.0.0", 8080))
        assert [extract(bind, f"fd.{end}proto") for end in "cslr"] == ["", "", None, None]
        assert extract(bind, "fd.proto").values == (8080,)

    def test_file_has_none(self) -> None:
        """A file descriptor has no role and no port."""
        event = Stream().open(200, "/etc/hosts")
        assert [extract(event, f"fd.{end}proto") for end in "cslr"] == [None] * 4


def _host_with_figures() -> FakeHost:
    host = default_host()
    host.later[210] = snapshot(210, 200, "zsh", env=["HOME=/root"], fd_limit=1024, vm_size_kb=9000, vm_rss_kb=3000,
                               vm_swap_kb=12, page_faults_major=3, page_faults_minor=450,
                               cgroups=["cpu=/user.slice", "memory=/user.slice", "cpuset=/user.slice"],
                               pidns_init_start_ns=1_000, exe_ctime_ns=5_000)
    return host


class TestProcessFigures:
    def test_exec_takes_the_figures_of_the_new_image(self) -> None:
        """Memory, faults, the open-files limit, cgroups and the pid namespace start come from the exec's read."""
        s = Stream(_host_with_figures())
        s.fork(200, 210)
        event = s.exec(210, "/usr/bin/zsh")
        s.open(210, "/etc/hosts", res=3)
        later = s.open(210, "/etc/passwd", res=4)
        assert [extract(event, f) for f in ("proc.vmsize", "proc.vmrss", "proc.vmswap", "proc.fdlimit")] == [
            9000, 3000, 12, 1024]
        assert [extract(event, f) for f in ("thread.pfmajor", "thread.pfminor", "thread.vmsize",
                                            "thread.vmsize.b", "thread.vmrss.b")] == [3, 450, 9000, 9000 * 1024,
                                                                                      3000 * 1024]
        assert extract(later, "proc.fdusage") == 2 / 1024 * 100
        assert extract(event, "thread.cgroups") == "cpu=/user.slice memory=/user.slice cpuset=/user.slice"
        assert extract(event, "thread.cgroup.memory") == "/user.slice"
        assert extract(event, "thread.cgroup[cpuacct]") is None
        assert extract(event, "proc.pidns_init_start_ts") == 1_000
        assert extract(event, "proc.exe_ino.ctime_duration_pidns_start") == 4_000
        assert extract(event, "thread.nametid") == "zsh210"

    def test_threads_report_process_memory_only_on_the_main_thread(self) -> None:
        """thread.vmsize is the process's on its main thread and 0 on the others; proc.vmsize is the same for both."""
        s = Stream(_host_with_figures())
        s.fork(200, 210)
        s.exec(210, "/usr/bin/zsh")
        s.fork(210, 211, flags=0x10F00, child_pid=210)  # CLONE_THREAD|CLONE_SIGHAND|CLONE_FS|CLONE_FILES|CLONE_VM
        event = s.open(211, "/etc/hosts", res=5)
        assert (extract(event, "thread.vmsize"), extract(event, "thread.vmrss"), extract(event, "proc.vmsize")) == (
            0, 0, 9000)
        assert extract(event, "proc.fdlimit") == 1024 and extract(event, "thread.nametid") == "zsh211"

    def test_unknown_figures(self) -> None:
        """A process the state never read has the unknown limit (-1, usage 0) and no cgroups or namespace start."""
        event = Stream().open(200, "/etc/hosts")
        assert (extract(event, "proc.fdlimit"), extract(event, "proc.fdusage")) == (-1, 0.0)
        assert extract(event, "thread.cgroups") is None and extract(event, "proc.pidns_init_start_ts") is None
        assert extract(event, "proc.exe_ino.ctime_duration_pidns_start") is None


class TestLineage:
    def _stream(self) -> Stream:
        host = FakeHost(snapshots=[snapshot(1, 0, "systemd", env=["container=no"]),
                                   snapshot(100, 1, "sshd", args=("-D",), env=["LANG=C"]),
                                   snapshot(200, 100, "bash", args=("-l",), env=["TOKEN=abc", "LANG=C.UTF-8"])])
        host.later[210] = snapshot(210, 200, "python3", env=["PWD=/"])
        s = Stream(host)
        s.fork(200, 210)
        return s

    def test_login_shell_is_the_eldest_shell(self) -> None:
        """proc.loginshellid: the pid of the eldest process whose name ends in `sh` (bash, 200; sshd does not), none
        when no process of the lineage is a shell."""
        s = self._stream()
        event = s.exec(210, "/usr/bin/python3", "-c", "pass")
        assert extract(event, "proc.loginshellid") == 200
        assert extract(s.open(100, "/etc/hosts"), "proc.loginshellid") is None

    def test_ancestor_args(self) -> None:
        """proc.aargs[N] is proc.args N levels up; bare, any ancestor's."""
        event = self._stream().exec(210, "/usr/bin/python3", "-c", "pass")
        assert (extract(event, "proc.aargs[0]"), extract(event, "proc.aargs[1]"), extract(event, "proc.aargs[2]")) == (
            "-c pass", "-l", "-D")
        assert extract(event, "proc.aargs[9]") is None
        assert extract(event, "proc.aargs").values == ("-l", "-D", "")

    def test_ancestor_environment(self) -> None:
        """proc.aenv[N] is an ancestor's whole environment, [NAME] the nearest ancestor's non-empty value (not the
        process's own), bare any ancestor's environment."""
        event = self._stream().exec(210, "/usr/bin/python3")
        assert extract(event, "proc.aenv[0]") == "PWD=/" and extract(event, "proc.aenv[1]") == "TOKEN=abc LANG=C.UTF-8"
        assert extract(event, "proc.aenv[LANG]") == "C.UTF-8" and extract(event, "proc.aenv[container]") == "no"
        assert extract(event, "proc.aenv[PWD]") == "" and extract(event, "proc.aenv[5]") is None
        assert extract(event, "proc.aenv").values == ("TOKEN=abc LANG=C.UTF-8", "LANG=C", "container=no")

"""Process lifecycle through the kernel state: fork, exec, exit, reparenting, pid reuse, credentials."""

from __future__ import annotations

from sources.kernel.state.process_events import CLONE_THREAD
from tests.sources.kernel.state_fixtures import CONTAINER_ID, FakeHost, Stream, extract, open_fd, parent_of, snapshot

CLONE_VM_FS_FILES_SIGHAND = 0x100 | 0x200 | 0x400 | 0x800


class TestFork:
    def test_forked_process_copies_the_fd_table_and_cwd(self) -> None:
        """A forked child sees its parent's fds and cwd, but later changes are its own."""
        s = Stream()
        s.open(200, "/tmp/a", res=7)
        s.fork(200, 210)
        child = s.thread(210)
        parent = s.thread(200)
        assert open_fd(child, 7).name == "/tmp/a" and child.cwd == "/home/alice"
        s.record("close", 210, fd=7)
        s.record("chdir", 210, path="/var")
        assert parent.fds.get(7) is not None and parent.cwd == "/home/alice"
        assert child.parent is parent and child.ppid == 200

    def test_thread_shares_fds_and_cwd_with_its_process(self) -> None:
        """A CLONE_THREAD child is a thread of the caller's process sharing its fd table and cwd."""
        s = Stream()
        s.fork(200, 201, child_pid=200, flags=CLONE_THREAD | CLONE_VM_FS_FILES_SIGHAND)
        thread = s.thread(201)
        assert thread.pid == 200 and not thread.is_main
        s.open(201, "/tmp/t", res=9)
        s.record("chdir", 201, path="/tmp")
        main = s.thread(200)
        assert open_fd(main, 9).name == "/tmp/t" and main.cwd == "/tmp"
        assert thread.parent is main.parent

    def test_clone_of_a_reused_tid_replaces_the_stale_entry(self) -> None:
        """A clone record for a tid the table still holds replaces that stale thread."""
        s = Stream()
        s.spawn(200, 210, "/usr/bin/sleep", "1")
        stale = s.state.ctx.table.get(210)
        s.spawn(100, 210, "/usr/bin/ls")
        fresh = s.thread(210)
        assert fresh is not stale and fresh.comm == "ls" and parent_of(fresh).comm == "sshd"
        assert 210 not in s.state.ctx.table.child_pids(200)


class TestExec:
    def test_exec_builds_a_new_thread_info_and_keeps_the_old_for_queued_events(self) -> None:
        """Events emitted before an exec keep the old image; the exec's event has the new one."""
        s = Stream()
        s.fork(200, 210)
        before = s.open(210, "/etc/hosts")
        after = s.exec(210, "/usr/bin/curl", "example.com")
        assert extract(before, "proc.name") == "bash" and extract(after, "proc.name") == "curl"
        assert extract(after, "proc.cmdline") == "curl example.com"
        assert extract(after, "proc.exe") == "/usr/bin/curl" and extract(after, "proc.exepath") == "/usr/bin/curl"
        assert before.payload.thread is not after.payload.thread

    def test_exec_closes_cloexec_fds_only(self) -> None:
        """A successful exec drops O_CLOEXEC descriptors and keeps the others."""
        s = Stream()
        s.fork(200, 210)
        s.open(210, "/tmp/keep", res=4)
        s.open(210, "/tmp/drop", res=5, flags=0o2000000)
        s.record("dup3", 210, res=6, oldfd=4, newfd=6, flags=0o2000000)
        s.exec(210, "/usr/bin/true")
        fds = s.thread(210).fds
        assert fds.get(4) is not None and fds.get(5) is None and fds.get(6) is None

    def test_failed_exec_changes_nothing(self) -> None:
        """An exec that returns an error leaves the process image as it was."""
        s = Stream()
        s.fork(200, 210)
        event = s.exec(210, "/nope", res=-2, comm="bash")
        assert extract(event, "proc.name") == "bash" and extract(event, "evt.res") == "ENOENT"
        assert extract(event, "evt.failed") is True

    def test_exec_uses_the_host_snapshot_when_the_process_is_still_there(self) -> None:
        """After an exec the state reads the new image's exe path, env and capabilities from the host."""
        host = FakeHost(snapshots=[snapshot(1, 0, "init"), snapshot(200, 1, "bash")])
        host.later[210] = snapshot(210, 200, "python3", exepath="/usr/bin/python3.11", env=["A=1"],
                                   cap_effective=1 << 21, exe_upper_layer=True, exe_writable=True)
        s = Stream(host)
        s.fork(200, 210)
        event = s.exec(210, "/usr/bin/python3", "-V")
        assert extract(event, "proc.exepath") == "/usr/bin/python3.11"
        assert extract(event, "proc.env[A]") == "1" and extract(event, "proc.env[B]") is None
        assert extract(event, "proc.env") == "A=1" and extract(event, "proc.env[0]") == "A=1"
        assert extract(event, "proc.args") == "-V" and extract(event, "proc.args[0]") == "-V"
        assert extract(event, "proc.args[1]") is None and extract(event, "proc.args[x]") is None
        assert extract(event, "thread.cap_effective") == "CAP_SYS_ADMIN"
        assert extract(event, "evt.arg.flags") == "EXE_WRITABLE|EXE_UPPER_LAYER"
        assert extract(event, "proc.is_exe_upper_layer") is True

    def test_children_follow_their_parent_across_its_exec(self) -> None:
        """A child's parent link points at the parent's new image after the parent execs."""
        s = Stream()
        s.fork(200, 210)
        s.fork(210, 220)
        s.exec(210, "/usr/bin/make")
        assert parent_of(s.thread(220)).comm == "make"


class TestExit:
    def test_orphans_go_to_init(self) -> None:
        """When a process dies its children are reparented to pid 1."""
        s = Stream()
        s.spawn(200, 210, "/usr/bin/sh")
        s.spawn(210, 220, "/usr/bin/sleep", "100")
        event = s.exit(210)
        table = s.state.ctx.table
        assert table.get(210) is None and parent_of(s.thread(220)).pid == 1
        assert extract(event, "evt.type") == "procexit" and extract(event, "proc.name") == "sh"

    def test_orphans_go_to_the_nearest_subreaper(self) -> None:
        """A subreaper ancestor (or a container's init) adopts orphans before pid 1 does."""
        s = Stream()
        s.spawn(300, 310, "/bin/sh")
        s.spawn(310, 320, "/bin/sleep", "5")
        s.exit(310)
        assert parent_of(s.thread(320)).pid == 300
        s.thread(200).is_subreaper = True
        s.spawn(200, 230, "/bin/sh")
        s.spawn(230, 240, "/bin/sleep", "5")
        s.exit(230)
        assert parent_of(s.thread(240)).pid == 200

    def test_leader_exit_keeps_the_process_while_threads_live(self) -> None:
        """A main thread that exits before its threads stays as the process's representative."""
        s = Stream()
        s.fork(200, 201, child_pid=200, flags=CLONE_THREAD | CLONE_VM_FS_FILES_SIGHAND)
        s.exit(200, group_dead=False)
        assert s.state.ctx.table.main(200) is not None
        s.exit(201, group_dead=True)
        assert s.state.ctx.table.main(200) is None


class TestAncestry:
    def test_five_generations(self) -> None:
        """proc.aname[N] and proc.apid[N] walk five generations up; proc.aname matches any ancestor."""
        s = Stream()
        names = ["gen1", "gen2", "gen3", "gen4", "gen5"]
        parent = 200
        for index, name in enumerate(names):
            tid = 500 + index
            s.spawn(parent, tid, f"/usr/bin/{name}")
            parent = tid
        event = s.open(504, "/tmp/x")
        expected = ["gen5", "gen4", "gen3", "gen2", "gen1", "bash"]
        assert [extract(event, f"proc.aname[{n}]") for n in range(6)] == expected
        assert extract(event, "proc.apid[5]") == 200 and extract(event, "proc.aname[9]") is None
        ancestors = extract(event, "proc.aname")
        assert ancestors.values[:6] == ("gen4", "gen3", "gen2", "gen1", "bash", "sshd") and str(ancestors) == "gen4"
        assert extract(event, "proc.aexepath[2]") == "/usr/bin/gen3"


class TestCredentialsAndSessions:
    def test_setuid_family(self) -> None:
        """setuid/setresuid/setgid change the ids user.uid and group.gid show; -1 keeps an id."""
        s = Stream()
        s.spawn(100, 210, "/usr/bin/sudo")
        s.record("setresuid", 210, ruid=1000, euid=1000, suid=-1)
        event = s.record("setgid", 210, gid=1000)
        assert extract(event, "user.uid") == 1000 and extract(event, "user.name") == "alice"
        assert extract(event, "group.gid") == 1000 and extract(event, "group.name") == "alice"
        assert s.thread(210).suid == 0

    def test_set_id_arguments_name_the_account_they_ask_for(self) -> None:
        """evt.arg.uid / evt.arg.gid of set*id name the account the call asks for (not the caller's, which the
        call has not changed yet), looked up in the caller's container; -1 and unknown ids say so."""
        s = Stream()
        s.spawn(100, 210, "/usr/sbin/sshd")
        event = s.record("setuid", 210, uid=1000)
        assert extract(event, "evt.arg.uid") == "alice" and extract(event, "user.name") == "alice"
        assert extract(event, "evt.rawarg.uid") == 1000 and "uid=1000(alice)" in extract(event, "evt.args")
        unknown = s.record("setgid", 210, gid=4242)
        assert extract(unknown, "evt.arg.gid") == "<NA>" and extract(unknown, "evt.args") == "res=0 gid=4242(<NA>)"
        keep = s.record("setresuid", 210, ruid=0xFFFFFFFF, euid=0, suid=-1)
        assert extract(keep, "evt.args") == "res=0 ruid=-1(<NONE>) euid=0(root) suid=-1(<NONE>)"
        in_container = s.record("setuid", 300, uid=1000)
        assert extract(in_container, "evt.arg.uid") == "<NA>"  # the container has no uid 1000

    def test_chmod_mode_names_the_bits_it_sets(self) -> None:
        """evt.arg.mode of chmod/fchmod/fchmodat names the S_I* bits (what `evt.arg.mode contains "S_ISUID"` tests);
        an open's mode stays an octal number."""
        s = Stream()
        event = s.record("chmod", 200, filename="/tmp/x", mode=0o4755)
        assert extract(event, "evt.arg.mode") == "S_IXOTH|S_IROTH|S_IXGRP|S_IRGRP|S_IXUSR|S_IWUSR|S_IRUSR|S_ISUID"
        assert extract(event, "evt.rawarg.mode") == 0o4755
        assert "mode=04755(S_IXOTH|" in extract(event, "evt.args")
        assert extract(s.record("fchmodat", 200, dirfd=-100, filename="/tmp/x", mode=0o2070), "evt.arg.mode") == (
            "S_IXGRP|S_IWGRP|S_IRGRP|S_ISGID")
        assert extract(s.record("fchmod", 200, fd=0, mode=0), "evt.arg.mode") == "0"
        assert extract(s.open(200, "/tmp/y", flags=0o100, res=5), "evt.arg.mode") == "0"

    def test_at_paths_resolve_against_their_directory_fd(self) -> None:
        """A relative *at path names a file below its dirfd's directory (rm -r unlinks that way), below the cwd for
        AT_FDCWD, and stays as given when the dirfd is unknown; absolute paths are shown as given."""
        s = Stream()
        s.open(200, "/usr/bin", flags=0o200000, res=5)  # O_DIRECTORY
        assert extract(s.record("unlinkat", 200, dirfd=5, name="tool", flags=0), "evt.arg.name") == "/usr/bin/tool"
        renamed = s.record("renameat", 200, olddirfd=-100, oldpath="a", newdirfd=5, newpath="../sbin/b")
        assert (extract(renamed, "evt.arg.oldpath"), extract(renamed, "evt.arg.newpath")) == (
            "/home/alice/a", "/usr/sbin/b")
        assert extract(s.record("mkdirat", 200, dirfd=9, path="d", mode=0o755), "evt.arg.path") == "d"
        assert extract(s.record("unlink", 200, path="x"), "evt.arg.path") == "/home/alice/x"

    def test_chown_ids_stay_numbers(self) -> None:
        """chown's uid and gid are plain numbers in libsinsp, shown without a name."""
        s = Stream()
        event = s.record("fchownat", 200, dirfd=-100, pathname="/tmp/f", uid=1000, gid=1000, flags=0)
        assert extract(event, "evt.arg.uid") == "1000" and extract(event, "evt.arg.gid") == "1000"

    def test_exec_takes_the_terminal_the_process_has_now(self) -> None:
        """A process that got its controlling terminal after the fork (setsid, then TIOCSCTTY: docker exec -t,
        sshd) shows it from its exec on, as libsinsp reads the tty at every exec; without a snapshot the
        inherited one stays."""
        host = FakeHost(snapshots=[snapshot(1, 0, "systemd"), snapshot(50, 1, "runc", tty=0)])
        host.later[60] = snapshot(60, 50, "bash", tty=34817)
        s = Stream(host)
        s.fork(50, 60)
        s.record("setsid", 60, res=60)
        assert extract(s.open(60, "/dev/pts/0", res=0), "proc.tty") == 0
        event = s.exec(60, "/bin/bash")
        assert extract(event, "proc.tty") == 34817
        later = s.spawn(60, 61, "/usr/bin/id")  # no snapshot of 61: inherits its parent's terminal
        assert extract(later, "proc.tty") == 34817

    def test_setsid_and_session_name(self) -> None:
        """setsid makes a process its session's leader; proc.sname names the leader."""
        s = Stream()
        s.spawn(200, 210, "/usr/bin/tmux")
        s.record("setsid", 210, res=210)
        event = s.spawn(210, 220, "/bin/zsh")
        assert extract(event, "proc.sid") == 210 and extract(event, "proc.sname") == "tmux"
        assert extract(s.open(210, "/x"), "proc.is_sid_leader") is True

    def test_setpgid_and_process_group_name(self) -> None:
        """setpgid(0, 0) makes a process its group's leader; its children's proc.vpgid.name names it."""
        s = Stream()
        s.spawn(200, 230, "/usr/bin/make")
        s.record("setpgid", 230, pid=0, pgid=0)
        event = s.spawn(230, 231, "/usr/bin/cc")
        assert extract(event, "proc.vpgid.name") == "make" and extract(event, "proc.pgid.exepath") == "/usr/bin/make"

    def test_unknown_thread_is_read_from_the_host_then_guessed(self) -> None:
        """A record from a thread never seen is filled from the host, or from the record itself."""
        host = FakeHost(snapshots=[snapshot(1, 0, "init")])
        host.later[900] = snapshot(900, 1, "late", container_id=CONTAINER_ID)
        s = Stream(host)
        event = s.record("openat", 900, res=3, comm="late", dirfd=-100, name="/x", flags=0)
        assert extract(event, "proc.pname") == "init" and extract(event, "container.id") == CONTAINER_ID[:12]
        guessed = s.record("openat", 901, res=3, comm="ghost", dirfd=-100, name="/x", flags=0)
        assert extract(guessed, "proc.name") == "ghost" and s.state.counters["threads_guessed"] == 1

"""Read one process from /proc into a ProcessSnapshot; every read tolerates the process vanishing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sources.kernel.state.cgroup import container_from_cgroup, controller_paths
from sources.kernel.state.host import FdSnapshot, ProcessSnapshot
from sources.kernel.state.procnet import (
    SocketEntry,
    describe_fd,
    parse_inet_table,
    parse_netlink_table,
    parse_unix_table,
)

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_INET_TABLES = (("tcp", "ipv4", "tcp"), ("tcp6", "ipv6", "tcp"), ("udp", "ipv4", "udp"),
                ("udp6", "ipv6", "udp"), ("raw", "ipv4", "raw"), ("raw6", "ipv6", "raw"))


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def boot_time_ns(proc: Path) -> int:
    """The boot time from /proc/stat (`btime`), in ns since the epoch."""
    for line in (read_text(proc / "stat") or "").splitlines():
        if line.startswith("btime "):
            return int(line.split()[1]) * 1_000_000_000
    return 0


def parse_status(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def parse_stat(text: str) -> list[str]:
    """Fields of /proc/<pid>/stat after the comm (which may hold spaces and parentheses)."""
    return text[text.rfind(")") + 2 :].split()


class ProcReader:
    """Reads processes below a /proc mount; socket tables are read once per network namespace."""

    def __init__(self, proc: Path) -> None:
        self.proc = proc
        self.boot_ns = boot_time_ns(proc)
        self._sockets_by_netns: dict[int, dict[int, SocketEntry]] = {}

    def forget_sockets(self) -> None:
        """Drop the socket tables read so far (they are only valid for one scan)."""
        self._sockets_by_netns.clear()

    def snapshot(self, tid: int, *, with_fds: bool) -> ProcessSnapshot | None:
        base = self.proc / str(tid)
        status_text = read_text(base / "status")
        # The thread's own stat: /proc/<tid>/stat sums the page faults of the whole thread group.
        stat_text = read_text(base / "task" / str(tid) / "stat") or read_text(base / "stat")
        if status_text is None or stat_text is None:
            return None
        status = parse_status(status_text)
        fields = parse_stat(stat_text)
        try:
            pid, ppid = int(status["Tgid"]), int(status["PPid"])
            uids = [int(x) for x in status["Uid"].split()]
            gids = [int(x) for x in status["Gid"].split()]
            tty, sid, pgid, start_ticks = int(fields[4]), int(fields[3]), int(fields[2]), int(fields[19])
        except (KeyError, IndexError, ValueError):
            return None
        args = (read_text(base / "cmdline") or "").split("\0")
        if args and args[-1] == "":
            args.pop()
        exe_link = _readlink(base / "exe")
        snap = ProcessSnapshot(
            tid=tid, pid=pid, ppid=ppid, comm=status.get("Name", ""),
            exe=args[0] if args else "", args=args[1:], cwd=_readlink(base / "cwd"),
            env=[e for e in (read_text(base / "environ") or "").split("\0") if e],
            uid=uids[0], euid=uids[1], suid=uids[2], gid=gids[0], egid=gids[1], sgid=gids[2],
            loginuid=_loginuid(read_text(base / "loginuid")), tty=tty, sid=sid, pgid=pgid,
            vpid=int(status.get("NSpid", str(pid)).split()[-1]),
            start_ns=self.boot_ns + start_ticks * 1_000_000_000 // _CLK_TCK,
            cap_inheritable=int(status.get("CapInh", "0"), 16), cap_permitted=int(status.get("CapPrm", "0"), 16),
            cap_effective=int(status.get("CapEff", "0"), 16),
        )
        _fill_exe(snap, base, exe_link)
        _fill_resources(snap, status, fields, read_text(base / "limits"))
        snap.pidns_init_start_ns = self._pidns_init_start_ns(base)
        cgroup_text = read_text(base / "cgroup") or ""
        found = container_from_cgroup(cgroup_text)
        snap.container_id = found.id if found else ""
        snap.cgroups = controller_paths(cgroup_text)
        if with_fds:
            snap.fds = self._fds(base)
            snap.threads = sorted(int(t) for t in _listdir(base / "task") if t.isdigit())
        return snap

    def _pidns_init_start_ns(self, base: Path) -> int:
        """When the init of the process's pid namespace started, from the /proc its root sees (pid 1 there)."""
        try:
            ticks = int(parse_stat(read_text(base / "root" / "proc" / "1" / "stat") or "")[19])
        except (IndexError, ValueError):
            return 0
        return self.boot_ns + ticks * 1_000_000_000 // _CLK_TCK

    def _fds(self, base: Path) -> list[FdSnapshot]:
        sockets = self._sockets(base)
        out = []
        for name in _listdir(base / "fd"):
            if not name.isdigit():
                continue
            link = _readlink(base / "fd" / name)
            if not link:
                continue
            flags = _fd_flags(read_text(base / "fdinfo" / name))
            is_dir = link.startswith("/") and _is_dir(base / "fd" / name)
            out.append(describe_fd(int(name), link, flags=flags, sockets=sockets, is_directory=is_dir))
        return sorted(out, key=lambda f: f.fd)

    def _sockets(self, base: Path) -> dict[int, SocketEntry]:
        try:
            netns = os.stat(base / "ns" / "net").st_ino
        except OSError:
            netns = 0
        table = self._sockets_by_netns.get(netns)
        if table is None:
            table = {}
            for name, kind, l4proto in _INET_TABLES:
                table.update(parse_inet_table(read_text(base / "net" / name) or "", kind=kind, l4proto=l4proto))
            table.update(parse_unix_table(read_text(base / "net" / "unix") or ""))
            table.update(parse_netlink_table(read_text(base / "net" / "netlink") or ""))
            self._sockets_by_netns[netns] = table
        return table


def _fill_exe(snap: ProcessSnapshot, base: Path, link: str) -> None:
    """Executable identity: resolved path, inode times, memfd origin, overlay layer, writability."""
    if link.startswith("/memfd:"):
        snap.exe_from_memfd = True
        snap.exepath = link[1:].removesuffix(" (deleted)")
    else:
        snap.exepath = link.removesuffix(" (deleted)")
    try:
        info = os.stat(base / "exe")
    except OSError:
        return
    snap.exe_ino, snap.exe_ctime_ns, snap.exe_mtime_ns = info.st_ino, info.st_ctime_ns, info.st_mtime_ns
    snap.exe_writable = _writable(info, snap.euid, snap.egid)
    upper = _overlay_upperdir(read_text(base / "mountinfo") or "")
    if upper is not None and snap.exepath.startswith("/"):
        snap.exe_upper_layer = os.path.lexists(upper + snap.exepath)
        snap.exe_lower_layer = not snap.exe_upper_layer


def _fill_resources(snap: ProcessSnapshot, status: dict[str, str], stat_fields: list[str], limits: str | None) -> None:
    """Memory (status), this thread's page faults (stat: minflt and majflt) and the soft open-files limit."""
    snap.vm_size_kb, snap.vm_rss_kb, snap.vm_swap_kb = (_kib(status.get(key, "")) for key in ("VmSize", "VmRSS",
                                                                                             "VmSwap"))
    snap.page_faults_minor, snap.page_faults_major = int(stat_fields[7]), int(stat_fields[9])
    snap.fd_limit = _soft_fd_limit(limits or "")


def _kib(text: str) -> int:
    """`1234 kB` as 1234; a kernel thread has no memory lines (0)."""
    number = text.split(" ", 1)[0]
    return int(number) if number.isdigit() else 0


def _soft_fd_limit(limits: str) -> int:
    for line in limits.splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files"):].split()[0]
            return int(soft) if soft.isdigit() else -1
    return -1


def _writable(info: os.stat_result, euid: int, egid: int) -> bool:
    if euid == 0:
        return True
    if info.st_uid == euid:
        return bool(info.st_mode & stat.S_IWUSR)
    if info.st_gid == egid:
        return bool(info.st_mode & stat.S_IWGRP)
    return bool(info.st_mode & stat.S_IWOTH)


def _overlay_upperdir(mountinfo: str) -> str | None:
    """The upperdir of the process's root mount when it is an overlay (a container's rootfs)."""
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        cols, rcols = left.split(), right.split()
        if len(cols) >= 5 and cols[4] == "/" and rcols[:1] == ["overlay"] and len(rcols) >= 3:
            for option in rcols[2].split(","):
                if option.startswith("upperdir="):
                    return option[len("upperdir="):]
    return None


def _loginuid(text: str | None) -> int:
    try:
        value = int((text or "").strip())
    except ValueError:
        return -1
    # The kernel prints an unset loginuid as 4294967295; Falco shows it as -1.
    return -1 if value == 0xFFFFFFFF else value


def _fd_flags(text: str | None) -> int:
    for line in (text or "").splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    return 0


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []

"""The syscalls the kernel probe can capture: their tracepoint arguments and Falco parameter names.

One table drives both sides: the BPF program generator (which tracepoint argument goes in which
slot, which ones are user memory to copy) and the decoder and field extractors (what each
parameter means). Names follow Falco's exit events, which carry the enter arguments too.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ParamKind(Enum):
    """What a parameter's raw value is, so that it can be copied in the kernel and shown like Falco."""

    FD = "fd"                      # int: a file descriptor (AT_FDCWD = -100 for *at dirfds)
    INT = "int"                    # signed number shown in decimal
    UINT = "uint"                  # unsigned number shown in decimal
    HEX = "hex"                    # number shown in hex (addresses)
    PID = "pid"
    UID = "uid"
    GID = "gid"
    MODE = "mode"                  # file mode bits, shown in octal
    CHMOD_MODE = "chmod_mode"      # the mode chmod sets: octal, resolved to S_I* names as libsinsp's PT_MODE
    OPEN_FLAGS = "open_flags"      # O_* flags, shown as "O_RDONLY|O_CLOEXEC"
    SOCK_FAMILY = "sock_family"    # AF_* value, shown as "AF_INET"
    SOCK_TYPE = "sock_type"        # SOCK_* value (with SOCK_NONBLOCK/SOCK_CLOEXEC bits)
    PTRACE_REQUEST = "ptrace_request"  # PTRACE_* value, shown as "PTRACE_ATTACH"
    CLONE_FLAGS = "clone_flags"    # CLONE_* bits
    DUP_FLAGS = "dup_flags"        # O_CLOEXEC only
    AT_FLAGS = "at_flags"          # AT_* bits of linkat/unlinkat/fchownat/execveat
    RENAME_FLAGS = "rename_flags"  # RENAME_* bits
    MEMFD_FLAGS = "memfd_flags"    # MFD_* bits
    MOUNT_FLAGS = "mount_flags"    # MS_* bits
    PATH = "path"                  # str: a path as passed (resolve against dirfd or cwd)
    STRING = "string"              # str: a name that is not a path (memfd name, fs type)
    SOCKADDR = "sockaddr"          # bytes: a raw struct sockaddr (empty when absent)
    ARGV = "argv"                  # list[str]: execve's argv
    FD_PAIR = "fd_pair"            # tuple[int, int]: the fds pipe/socketpair wrote back
    BYTEBUF = "bytebuf"            # bytes: the first bytes of an I/O buffer (None when not captured)


class Copy(Enum):
    """How the kernel side obtains a parameter's value."""

    VALUE = "value"              # the tracepoint argument itself
    RESULT = "result"            # the syscall's return value
    USER_STR = "user_str"        # NUL-terminated user string at the argument's address
    USER_ARGV = "user_argv"      # NULL-terminated array of user strings at the address
    USER_BYTES = "user_bytes"    # `length` bytes at the address (length: argument or constant)
    USER_BYTES_LENPTR = "user_bytes_lenptr"  # bytes at the address; length is an int* argument
    #: An I/O buffer, at most the snaplen, copied only when a rule needs it (see BUFFER_SYSCALLS): the bytes
    #: the syscall read (its result), or the bytes it was given to write (the `length` argument).
    DATA_READ = "data_read"
    DATA_WRITTEN = "data_written"
    #: The device (as stat shows it) and inode number of the file the result descriptor names, read from the
    #: kernel's file table at exit: what names a file whatever link or path reached it (0 when unknown).
    FILE_DEV = "file_dev"
    FILE_INO = "file_ino"
    #: A file an open created in a directory the rules name (watched_files.py), which no scan has found yet: the
    #: directory's inode (0 otherwise) and the file's name in it (a part, present only then).
    DIR_INO = "dir_ino"
    DIRENT_NAME = "dirent_name"

    @property
    def from_user_memory(self) -> bool:
        return self not in _NOT_USER_MEMORY

    @property
    def is_part(self) -> bool:
        """Carried as a variable part of the record, not in a slot."""
        return self.from_user_memory or self is Copy.DIRENT_NAME


_NOT_USER_MEMORY = frozenset({Copy.VALUE, Copy.RESULT, Copy.FILE_DEV, Copy.FILE_INO, Copy.DIR_INO,
                              Copy.DIRENT_NAME})


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of an event: Falco's name, its kind and where the kernel takes it from."""

    name: str
    kind: ParamKind
    arg: str = ""          # tracepoint argument name; "" for the result
    copy: Copy = Copy.VALUE
    length: str | int = 0  # for USER_BYTES: the argument holding the length, or a constant
    #: In evt.args and evt.arg[N]; False for what only the state reads (not a parameter of Falco's event).
    shown: bool = True


@dataclass(frozen=True, slots=True)
class SyscallSpec:
    """An event type the probe captures from one syscall's enter/exit tracepoint pair."""

    name: str
    params: tuple[Param, ...]
    tracepoint: str = ""    # syscall name of the tracepoints when it differs from `name`
    read_at_enter: bool = False  # user memory gone at exit (execve replaces the address space)
    #: The local end of a TCP connect, from the sock:inet_sock_set_state tracepoint the kernel fires in
    #: the connecting thread (args `local_addr`: a raw struct sockaddr, empty when not TCP or it failed).
    tcp_local: bool = False

    @property
    def syscall(self) -> str:
        return self.tracepoint or self.name


def _res(kind: ParamKind = ParamKind.INT, name: str = "res") -> Param:
    return Param(name, kind, copy=Copy.RESULT)


def _p(name: str, kind: ParamKind, arg: str = "") -> Param:
    return Param(name, kind, arg or name)


def _path(name: str, arg: str) -> Param:
    return Param(name, ParamKind.PATH, arg, Copy.USER_STR)


#: Falco's last two parameters of an open's exit, then what the state reads of a file created in a watched
#: directory.
_FILE_ID = (Param("dev", ParamKind.HEX, copy=Copy.FILE_DEV), Param("ino", ParamKind.UINT, copy=Copy.FILE_INO),
            Param("dir_ino", ParamKind.UINT, copy=Copy.DIR_INO, shown=False),
            Param("dirent", ParamKind.STRING, copy=Copy.DIRENT_NAME, shown=False))


def _sockaddr(name: str, arg: str, length: str, *, length_is_pointer: bool = False) -> Param:
    copy = Copy.USER_BYTES_LENPTR if length_is_pointer else Copy.USER_BYTES
    return Param(name, ParamKind.SOCKADDR, arg, copy, length)


def _data(buffer: str, written_length: str = "") -> Param:
    """Falco's `data` parameter: read into (no length: the result says how much) or written from `buffer`."""
    if written_length:
        return Param(DATA_PARAM, ParamKind.BYTEBUF, buffer, Copy.DATA_WRITTEN, written_length)
    return Param(DATA_PARAM, ParamKind.BYTEBUF, buffer, Copy.DATA_READ)


DATA_PARAM = "data"
_FD, _INT, _UINT = ParamKind.FD, ParamKind.INT, ParamKind.UINT
_EXEC_COMMON = (Param("argv", ParamKind.ARGV, "argv", Copy.USER_ARGV),)

_SPECS: tuple[SyscallSpec, ...] = (
    # Files
    SyscallSpec("open", (_res(_FD, "fd"), _path("name", "filename"), _p("flags", ParamKind.OPEN_FLAGS),
                         _p("mode", ParamKind.MODE), *_FILE_ID)),
    SyscallSpec("openat", (_res(_FD, "fd"), _p("dirfd", _FD, "dfd"), _path("name", "filename"),
                           _p("flags", ParamKind.OPEN_FLAGS), _p("mode", ParamKind.MODE), *_FILE_ID)),
    # struct open_how is user memory: flags, mode and resolve are split out by the decoder.
    SyscallSpec("openat2", (_res(_FD, "fd"), _p("dirfd", _FD, "dfd"), _path("name", "filename"),
                            Param("how", ParamKind.HEX, "how", Copy.USER_BYTES, 24), *_FILE_ID)),
    SyscallSpec("creat", (_res(_FD, "fd"), _path("name", "pathname"), _p("mode", ParamKind.MODE), *_FILE_ID)),
    SyscallSpec("close", (_res(), _p("fd", _FD))),
    SyscallSpec("dup", (_res(_FD), _p("oldfd", _FD, "fildes"))),
    SyscallSpec("dup2", (_res(_FD), _p("oldfd", _FD), _p("newfd", _FD))),
    SyscallSpec("dup3", (_res(_FD), _p("oldfd", _FD), _p("newfd", _FD), _p("flags", ParamKind.DUP_FLAGS))),
    SyscallSpec("pipe", (_res(), Param("fds", ParamKind.FD_PAIR, "fildes", Copy.USER_BYTES, 8))),
    SyscallSpec("pipe2", (_res(), Param("fds", ParamKind.FD_PAIR, "fildes", Copy.USER_BYTES, 8),
                          _p("flags", ParamKind.OPEN_FLAGS))),
    SyscallSpec("unlink", (_res(), _path("path", "pathname"))),
    SyscallSpec("unlinkat", (_res(), _p("dirfd", _FD, "dfd"), _path("name", "pathname"),
                             _p("flags", ParamKind.AT_FLAGS, "flag"))),
    SyscallSpec("rename", (_res(), _path("oldpath", "oldname"), _path("newpath", "newname"))),
    SyscallSpec("renameat", (_res(), _p("olddirfd", _FD, "olddfd"), _path("oldpath", "oldname"),
                             _p("newdirfd", _FD, "newdfd"), _path("newpath", "newname"))),
    SyscallSpec("renameat2", (_res(), _p("olddirfd", _FD, "olddfd"), _path("oldpath", "oldname"),
                              _p("newdirfd", _FD, "newdfd"), _path("newpath", "newname"),
                              _p("flags", ParamKind.RENAME_FLAGS))),
    SyscallSpec("link", (_res(), _path("oldpath", "oldname"), _path("newpath", "newname"))),
    SyscallSpec("linkat", (_res(), _p("olddir", _FD, "olddfd"), _path("oldpath", "oldname"),
                           _p("newdir", _FD, "newdfd"), _path("newpath", "newname"),
                           _p("flags", ParamKind.AT_FLAGS))),
    SyscallSpec("symlink", (_res(), _path("target", "oldname"), _path("linkpath", "newname"))),
    SyscallSpec("symlinkat", (_res(), _path("target", "oldname"), _p("linkdirfd", _FD, "newdfd"),
                              _path("linkpath", "newname"))),
    SyscallSpec("mkdir", (_res(), _path("path", "pathname"), _p("mode", ParamKind.MODE))),
    SyscallSpec("mkdirat", (_res(), _p("dirfd", _FD, "dfd"), _path("path", "pathname"),
                            _p("mode", ParamKind.MODE))),
    SyscallSpec("rmdir", (_res(), _path("path", "pathname"))),
    SyscallSpec("chmod", (_res(), _path("filename", "filename"), _p("mode", ParamKind.CHMOD_MODE))),
    SyscallSpec("fchmod", (_res(), _p("fd", _FD), _p("mode", ParamKind.CHMOD_MODE))),
    SyscallSpec("fchmodat", (_res(), _p("dirfd", _FD, "dfd"), _path("filename", "filename"),
                             _p("mode", ParamKind.CHMOD_MODE))),
    # libsinsp's chown events carry plain numbers (PT_UINT32), not ids it resolves to names as for set*id.
    SyscallSpec("chown", (_res(), _path("path", "filename"), _p("uid", _UINT, "user"),
                          _p("gid", _UINT, "group"))),
    SyscallSpec("lchown", (_res(), _path("path", "filename"), _p("uid", _UINT, "user"),
                           _p("gid", _UINT, "group"))),
    SyscallSpec("fchown", (_res(), _p("fd", _FD), _p("uid", _UINT, "user"),
                           _p("gid", _UINT, "group"))),
    SyscallSpec("fchownat", (_res(), _p("dirfd", _FD, "dfd"), _path("pathname", "filename"),
                             _p("uid", _UINT, "user"), _p("gid", _UINT, "group"),
                             _p("flags", ParamKind.AT_FLAGS, "flag"))),
    SyscallSpec("chdir", (_res(), _path("path", "filename"))),
    SyscallSpec("fchdir", (_res(), _p("fd", _FD))),
    SyscallSpec("mount", (_res(), _path("dev", "dev_name"), _path("dir", "dir_name"),
                          Param("type", ParamKind.STRING, "type", Copy.USER_STR),
                          _p("flags", ParamKind.MOUNT_FLAGS))),
    SyscallSpec("memfd_create", (_res(_FD, "fd"), Param("name", ParamKind.STRING, "uname", Copy.USER_STR),
                                 _p("flags", ParamKind.MEMFD_FLAGS))),
    SyscallSpec("init_module", (_res(), _p("length", _UINT, "len"))),
    SyscallSpec("finit_module", (_res(), _p("fd", _FD), _p("flags", _UINT))),
    # I/O: the buffer only when a rule asks for it (see BUFFER_SYSCALLS).
    SyscallSpec("read", (_res(), _data("buf"), _p("fd", _FD), _p("size", _UINT, "count"))),
    SyscallSpec("write", (_res(), _data("buf", "count"), _p("fd", _FD), _p("size", _UINT, "count"))),
    SyscallSpec("pread", (_res(), _data("buf"), _p("fd", _FD), _p("size", _UINT, "count"), _p("pos", _UINT)),
                tracepoint="pread64"),
    SyscallSpec("pwrite", (_res(), _data("buf", "count"), _p("fd", _FD), _p("size", _UINT, "count"),
                           _p("pos", _UINT)), tracepoint="pwrite64"),
    # Network
    SyscallSpec("socket", (_res(_FD, "fd"), _p("domain", ParamKind.SOCK_FAMILY, "family"),
                           _p("type", ParamKind.SOCK_TYPE), _p("proto", _UINT, "protocol"))),
    SyscallSpec("socketpair", (_res(), _p("domain", ParamKind.SOCK_FAMILY, "family"),
                               _p("type", ParamKind.SOCK_TYPE), _p("proto", _UINT, "protocol"),
                               Param("fds", ParamKind.FD_PAIR, "usockvec", Copy.USER_BYTES, 8))),
    SyscallSpec("connect", (_res(), _p("fd", _FD), _sockaddr("addr", "uservaddr", "addrlen")), tcp_local=True),
    SyscallSpec("bind", (_res(), _p("fd", _FD), _sockaddr("addr", "umyaddr", "addrlen"))),
    SyscallSpec("listen", (_res(), _p("fd", _FD), _p("backlog", _INT))),
    SyscallSpec("accept", (_res(_FD, "fd"), _p("listen_fd", _FD, "fd"),
                           _sockaddr("addr", "upeer_sockaddr", "upeer_addrlen", length_is_pointer=True))),
    SyscallSpec("accept4", (_res(_FD, "fd"), _p("listen_fd", _FD, "fd"),
                            _sockaddr("addr", "upeer_sockaddr", "upeer_addrlen", length_is_pointer=True),
                            _p("flags", ParamKind.SOCK_TYPE))),
    # send(2) and recv(2) are these syscalls with no address on x86-64 and arm64.
    SyscallSpec("sendto", (_res(), _data("buff", "len"), _p("fd", _FD), _p("size", _UINT, "len"),
                           _sockaddr("addr", "addr", "addr_len"))),
    SyscallSpec("recvfrom", (_res(), _data("ubuf"), _p("fd", _FD), _p("size", _UINT, "size"),
                             _sockaddr("addr", "addr", "addr_len", length_is_pointer=True))),
    SyscallSpec("sendmsg", (_res(), _p("fd", _FD), _p("flags", _UINT))),
    # Processes and credentials
    SyscallSpec("execve", (_res(), _path("filename", "filename"), *_EXEC_COMMON), read_at_enter=True),
    SyscallSpec("execveat", (_res(), _p("dirfd", _FD, "fd"), _path("pathname", "filename"), *_EXEC_COMMON,
                             _p("flags", ParamKind.AT_FLAGS)), read_at_enter=True),
    SyscallSpec("ptrace", (_res(), _p("request", ParamKind.PTRACE_REQUEST), _p("pid", ParamKind.PID),
                           _p("addr", ParamKind.HEX), _p("data", ParamKind.HEX))),
    SyscallSpec("setuid", (_res(), _p("uid", ParamKind.UID))),
    SyscallSpec("setgid", (_res(), _p("gid", ParamKind.GID))),
    SyscallSpec("setreuid", (_res(), _p("ruid", ParamKind.UID), _p("euid", ParamKind.UID))),
    SyscallSpec("setregid", (_res(), _p("rgid", ParamKind.GID), _p("egid", ParamKind.GID))),
    SyscallSpec("setresuid", (_res(), _p("ruid", ParamKind.UID), _p("euid", ParamKind.UID),
                              _p("suid", ParamKind.UID))),
    SyscallSpec("setresgid", (_res(), _p("rgid", ParamKind.GID), _p("egid", ParamKind.GID),
                              _p("sgid", ParamKind.GID))),
    SyscallSpec("setsid", (_res(),)),
    SyscallSpec("setpgid", (_res(), _p("pid", ParamKind.PID), _p("pgid", ParamKind.PID))),
    SyscallSpec("capset", (_res(),)),
)

#: Captured syscalls by Falco event type name.
SYSCALLS: dict[str, SyscallSpec] = {spec.name: spec for spec in _SPECS}

#: Event types whose `data` parameter (Falco's I/O buffer: `evt.buffer`, `evt.rawarg.data`) the probe can copy.
BUFFER_SYSCALLS = frozenset(spec.name for spec in _SPECS if any(p.name == DATA_PARAM for p in spec.params))


def user_params(spec: SyscallSpec) -> tuple[Param, ...]:
    """The parameters copied from user memory, in the order of their parts in a record: the I/O buffer last,
    so that a record without it (no rule needs it) simply has one part fewer."""
    copied = [p for p in spec.params if p.copy.is_part]
    # Parts present only sometimes come last, so that the others keep their indexes.
    return tuple(sorted(copied, key=lambda p: (p.copy is Copy.DIRENT_NAME, p.kind is ParamKind.BYTEBUF)))


#: Event types made from scheduler tracepoints rather than a syscall pair. `clone`, `clone3`,
#: `fork` and `vfork` records come from sched_process_fork (args: `child_tid`, `child_pid`,
#: `flags` as CLONE_* bits; res is the child's tid) and `procexit` from sched_process_exit
#: (args: `group_dead`, true when the last thread of the process exited).
CLONE_TYPES = ("clone", "clone3", "fork", "vfork")
#: `tcp_local` is the agent's own record, not a Falco event type: the local port a non-blocking TCP connect
#: got once its handshake completed, after the syscall returned (args `fd`, `local_port`; tid/pid are the
#: connecting thread's; comm and credentials are not meaningful). It updates the fd state only.
SCHED_TYPES = (*CLONE_TYPES, "procexit", "tcp_local")
#: Records that only update the state: never events for the rules.
STATE_ONLY_TYPES = frozenset({"tcp_local"})

#: What the user-space state always needs, whatever the rules ask: process lifecycle, cwd,
#: credentials and the fd table.
STATE_SYSCALLS = frozenset({
    "execve", "execveat", "chdir", "fchdir", "setsid", "setpgid", "setuid", "setgid", "setreuid",
    "setregid", "setresuid", "setresgid", "capset", "open", "openat", "openat2", "creat", "close",
    "dup", "dup2", "dup3", "pipe", "pipe2", "socket", "socketpair", "connect", "bind", "accept",
    "accept4", "memfd_create",
})

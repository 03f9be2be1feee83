"""Show syscall argument values the way Falco does: flag names, enum names, errno names, capabilities."""

from __future__ import annotations

import errno
from collections.abc import Sequence

NameTable = Sequence[tuple[str, int]]

# Open flags are shown in Falco's own bit layout (PPM_O_*), in the order of its name table.
_PPM_O = {"RDONLY": 1 << 0, "WRONLY": 1 << 1, "CREAT": 1 << 2, "APPEND": 1 << 3, "DSYNC": 1 << 4,
          "EXCL": 1 << 5, "NONBLOCK": 1 << 6, "SYNC": 1 << 7, "TRUNC": 1 << 8, "DIRECT": 1 << 9,
          "DIRECTORY": 1 << 10, "LARGEFILE": 1 << 11, "CLOEXEC": 1 << 12, "TMPFILE": 1 << 13}
OPEN_FLAG_NAMES: NameTable = (
    *((f"O_{n}", _PPM_O[n]) for n in (
        "LARGEFILE", "DIRECTORY", "DIRECT", "TRUNC", "SYNC", "NONBLOCK", "EXCL", "DSYNC", "APPEND", "CREAT")),
    ("O_RDWR", _PPM_O["RDONLY"] | _PPM_O["WRONLY"]), ("O_WRONLY", _PPM_O["WRONLY"]), ("O_RDONLY", _PPM_O["RDONLY"]),
    ("O_CLOEXEC", _PPM_O["CLOEXEC"]), ("O_TMPFILE", _PPM_O["TMPFILE"]))
# Linux bit -> Falco bit, for the flags besides the access mode.
_LINUX_OPEN_BITS = ((0o100, "CREAT"), (0o2000, "APPEND"), (0o10000, "DSYNC"), (0o200, "EXCL"),
                    (0o4000, "NONBLOCK"), (0o4010000, "SYNC"), (0o1000, "TRUNC"), (0o40000, "DIRECT"),
                    (0o200000, "DIRECTORY"), (0o100000, "LARGEFILE"), (0o2000000, "CLOEXEC"))
_O_TMPFILE = 0o20200000


def ppm_open_flags(linux_flags: int) -> int:
    """Linux open(2) flags in Falco's PPM_O_* layout (what `evt.rawarg.flags` shows)."""
    access = linux_flags & 0o3
    out = (_PPM_O["RDONLY"], _PPM_O["WRONLY"], _PPM_O["RDONLY"] | _PPM_O["WRONLY"], 0)[access]
    for bit, name in _LINUX_OPEN_BITS:
        if linux_flags & bit == bit:
            out |= _PPM_O[name]
    if linux_flags & _O_TMPFILE == _O_TMPFILE:
        out = (out & ~_PPM_O["DIRECTORY"]) | _PPM_O["TMPFILE"]
    return out


SOCKET_FAMILY_NAMES: NameTable = (
    ("AF_NFC", 39), ("AF_ALG", 38), ("AF_CAIF", 37), ("AF_IEEE802154", 36), ("AF_PHONET", 35), ("AF_ISDN", 34),
    ("AF_RXRPC", 33), ("AF_IUCV", 32), ("AF_BLUETOOTH", 31), ("AF_TIPC", 30), ("AF_CAN", 29), ("AF_LLC", 26),
    ("AF_WANPIPE", 25), ("AF_PPPOX", 24), ("AF_IRDA", 23), ("AF_SNA", 22), ("AF_RDS", 21), ("AF_ATMSVC", 20),
    ("AF_ECONET", 19), ("AF_ASH", 18), ("AF_PACKET", 17), ("AF_ROUTE", 16), ("AF_NETLINK", 16), ("AF_KEY", 15),
    ("AF_SECURITY", 14), ("AF_NETBEUI", 13), ("AF_DECnet", 12), ("AF_ROSE", 11), ("AF_INET6", 10), ("AF_X25", 9),
    ("AF_ATMPVC", 8), ("AF_BRIDGE", 7), ("AF_NETROM", 6), ("AF_APPLETALK", 5), ("AF_IPX", 4), ("AF_AX25", 3),
    ("AF_INET", 2), ("AF_LOCAL", 1), ("AF_UNIX", 1), ("AF_UNSPEC", 0))

PTRACE_REQUEST_NAMES: NameTable = (
    ("PTRACE_TRACEME", 0), ("PTRACE_PEEKTEXT", 1), ("PTRACE_PEEKDATA", 2), ("PTRACE_PEEKUSR", 3),
    ("PTRACE_POKETEXT", 4), ("PTRACE_POKEDATA", 5), ("PTRACE_POKEUSR", 6), ("PTRACE_CONT", 7), ("PTRACE_KILL", 8),
    ("PTRACE_SINGLESTEP", 9), ("PTRACE_GETREGS", 12), ("PTRACE_SETREGS", 13), ("PTRACE_GETFPREGS", 14),
    ("PTRACE_SETFPREGS", 15), ("PTRACE_ATTACH", 16), ("PTRACE_DETACH", 17), ("PTRACE_GETFPXREGS", 18),
    ("PTRACE_SETFPXREGS", 19), ("PTRACE_OLDSETOPTIONS", 21), ("PTRACE_SYSCALL", 24),
    ("PTRACE_GET_THREAD_AREA", 25), ("PTRACE_SET_THREAD_AREA", 26), ("PTRACE_ARCH_PRCTL", 30),
    ("PTRACE_SYSEMU", 31), ("PTRACE_SYSEMU_SINGLESTEP", 32), ("PTRACE_SINGLEBLOCK", 33),
    ("PTRACE_SETOPTIONS", 0x4200), ("PTRACE_GETEVENTMSG", 0x4201), ("PTRACE_GETSIGINFO", 0x4202),
    ("PTRACE_SETSIGINFO", 0x4203), ("PTRACE_GETREGSET", 0x4204), ("PTRACE_SETREGSET", 0x4205),
    ("PTRACE_SEIZE", 0x4206), ("PTRACE_INTERRUPT", 0x4207), ("PTRACE_LISTEN", 0x4208),
    ("PTRACE_PEEKSIGINFO", 0x4209), ("PTRACE_GETSIGMASK", 0x420A), ("PTRACE_SETSIGMASK", 0x420B))

CLONE_FLAG_NAMES: NameTable = (
    ("CLONE_FILES", 0x400), ("CLONE_FS", 0x200), ("CLONE_IO", 0x80000000), ("CLONE_NEWIPC", 0x8000000),
    ("CLONE_NEWNET", 0x40000000), ("CLONE_NEWNS", 0x20000), ("CLONE_NEWPID", 0x20000000),
    ("CLONE_NEWUTS", 0x4000000), ("CLONE_PARENT", 0x8000), ("CLONE_PARENT_SETTID", 0x100000),
    ("CLONE_PTRACE", 0x2000), ("CLONE_SIGHAND", 0x800), ("CLONE_SYSVSEM", 0x40000), ("CLONE_THREAD", 0x10000),
    ("CLONE_UNTRACED", 0x800000), ("CLONE_VM", 0x100), ("CLONE_NEWUSER", 0x10000000),
    ("CLONE_CHILD_CLEARTID", 0x200000), ("CLONE_CHILD_SETTID", 0x1000000), ("CLONE_SETTLS", 0x80000),
    ("CLONE_VFORK", 0x4000), ("CLONE_NEWCGROUP", 0x2000000))

AT_FLAG_NAMES: NameTable = (("AT_SYMLINK_NOFOLLOW", 0x100), ("AT_REMOVEDIR", 0x200), ("AT_SYMLINK_FOLLOW", 0x400),
                            ("AT_EMPTY_PATH", 0x1000))
RENAME_FLAG_NAMES: NameTable = (("RENAME_NOREPLACE", 1), ("RENAME_EXCHANGE", 2), ("RENAME_WHITEOUT", 4))
#: chmod's mode bits, lowest first as libsinsp names them (S_IXOTH ... S_ISUID).
CHMOD_MODE_NAMES: NameTable = tuple((name, 1 << bit) for bit, name in enumerate((
    "S_IXOTH", "S_IWOTH", "S_IROTH", "S_IXGRP", "S_IWGRP", "S_IRGRP", "S_IXUSR", "S_IWUSR", "S_IRUSR",
    "S_ISVTX", "S_ISGID", "S_ISUID")))
MEMFD_FLAG_NAMES: NameTable = (("MFD_CLOEXEC", 1), ("MFD_ALLOW_SEALING", 2), ("MFD_HUGETLB", 4))
DUP_FLAG_NAMES: NameTable = (("O_CLOEXEC", 0o2000000),)
MOUNT_FLAG_NAMES: NameTable = (
    ("RDONLY", 1), ("NOSUID", 2), ("NODEV", 4), ("NOEXEC", 8), ("SYNCHRONOUS", 16), ("REMOUNT", 32),
    ("MANDLOCK", 64), ("DIRSYNC", 128), ("NOATIME", 1024), ("NODIRATIME", 2048), ("BIND", 4096),
    ("MOVE", 8192), ("REC", 16384), ("SILENT", 32768), ("POSIXACL", 1 << 16), ("UNBINDABLE", 1 << 17),
    ("PRIVATE", 1 << 18), ("SLAVE", 1 << 19), ("SHARED", 1 << 20), ("RELATIME", 1 << 21),
    ("KERNMOUNT", 1 << 22), ("I_VERSION", 1 << 23), ("STRICTATIME", 1 << 24), ("LAZYTIME", 1 << 25))

#: Falco's exe flags of an execve (PPM_EXE_*), in the order of its name table.
EXE_WRITABLE, EXE_UPPER_LAYER, EXE_FROM_MEMFD, EXE_LOWER_LAYER = 1 << 0, 1 << 1, 1 << 2, 1 << 3
EXE_FLAG_NAMES: NameTable = (("EXE_WRITABLE", EXE_WRITABLE), ("EXE_UPPER_LAYER", EXE_UPPER_LAYER),
                             ("EXE_FROM_MEMFD", EXE_FROM_MEMFD), ("EXE_LOWER_LAYER", EXE_LOWER_LAYER))

CAPABILITY_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE")


def flag_names(value: int, table: NameTable) -> str:
    """Falco's flag rendering: names of the table entries whose bits are all set, in table order,
    each entry's bits consumed so that O_RDWR hides O_RDONLY and O_WRONLY; "" when none matches."""
    names = []
    remaining = value
    for name, bits in table:
        if bits == value:
            names.append(name)
            break
        if bits and remaining & bits == bits:
            names.append(name)
            remaining &= ~bits
    return "|".join(names)


def enum_name(value: int, table: NameTable) -> str:
    """The first name of the table for exactly this value; "" when none."""
    for name, number in table:
        if number == value:
            return name
    return ""


def errno_name(res: int) -> str:
    """`ENOENT` for -2; "" for a value that is not a negative errno."""
    return errno.errorcode.get(-res, "") if res < 0 else ""


def capabilities_text(mask: int) -> str:
    """Capability names of a mask, space separated, as thread.cap_* shows them."""
    return " ".join(name for bit, name in enumerate(CAPABILITY_NAMES) if mask >> bit & 1)

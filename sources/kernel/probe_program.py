"""Generate the BPF C program (for BCC) that captures the chosen syscalls.

Per syscall, the enter tracepoint saves the arguments per thread and the exit tracepoint joins
them with the result and writes one record (layout in wire.py) to the ring buffer. Programs read
tracepoint arguments, helper values and user memory the syscall was given; the only kernel structs
they read (an opened file's device, inode and dentry) are at offsets from the running kernel's BTF,
never from the headers, so approximate kernel headers are enough. The agent's own process is skipped
in the kernel, and records that cannot be reserved are counted per CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sources.kernel.prefilter import FACT_COMBINATIONS, PATH_KEY, OpenFact
from sources.kernel.state.fd_events import OPEN_TYPES
from sources.kernel.syscalls import (
    BUFFER_SYSCALLS,
    CLONE_TYPES,
    SYSCALLS,
    Copy,
    Param,
    ParamKind,
    SyscallSpec,
    user_params,
)
from sources.kernel.wire import HEADER, LOCAL_SLOTS, MAX_ARGS, MAX_PARTS, TYPE_IDS

#: Room for the variable parts (a power of two, for the masking the verifier needs) and the
#: largest single copy; a path or argument longer than STR_MAX is cut. A copy may start anywhere below DATA_MAX
#: and must end inside the record (4 * DATA_MAX less the header): PATH_MAX, so that the longest path the kernel
#: takes (an evasion padded with `./`) arrives whole.
DATA_MAX = 4096
STR_MAX = DATA_MAX
ARGV_MAX = 32
SOCKADDR_MAX = 128
#: Falco's default snaplen: how many bytes of an I/O buffer a record carries; the largest one allowed.
DEFAULT_SNAPLEN = 80
SNAPLEN_MAX = 1024

#: Indexes of the per-CPU counters array.
COUNTER_LOST = 0        # ring buffer full: the record was dropped
COUNTER_NO_ENTER = 1    # an exit without its saved enter (the pending map evicted the thread's slot)
COUNTER_REVEALED = 2    # a kept open sent late, when its descriptor was used as a directory
COUNTERS = 3
#: A CPU wakes the reader once per this many records it writes; in between the reader finds them when it polls
#: (its timeout bounds the wait): a wakeup per record costs the traced process microseconds per syscall.
WAKEUP_EVERY = 64

#: The prefilter's settings array (prefilter.py): per event type, (enabled, any-path term bits, own term bits),
#: then the term bits per fact combination.
FILTER_PER_TYPE = 3
FILTER_FACTS_AT = FILTER_PER_TYPE * len(TYPE_IDS)
FILTER_SUFFIXES_AT = FILTER_FACTS_AT + FACT_COMBINATIONS  # 1 when the suffix trie holds entries
FILTER_SLOTS = FILTER_SUFFIXES_AT + 1
#: Descriptors whose open the prefilter kept in the kernel, per process, with the open's path and flags: their
#: close stays there too, and their first use as a directory (a dirfd, fchdir) sends the open first.
HIDDEN_FDS_MAX = 16384
#: The kernel struct members the probe reads, by the #define their offset becomes, and the bytes it reads of each
#: (8: a pointer): from a descriptor number to its file's device, inode and dentry, and the caller's registers (the
#: x86-64 syscall arguments). The offsets come from the running kernel's BTF (btf.py): the headers BCC compiles
#: against may be another kernel's.
BTF_MEMBERS: dict[str, tuple[str, str, int]] = {
    "OFF_TASK_FILES": ("task_struct", "files", 8),
    "OFF_FILES_FDT": ("files_struct", "fdt", 8),
    "OFF_FDT_MAX_FDS": ("fdtable", "max_fds", 4),
    "OFF_FDT_FD": ("fdtable", "fd", 8),
    "OFF_FILE_INODE": ("file", "f_inode", 8),
    "OFF_INODE_INO": ("inode", "i_ino", 8),
    "OFF_INODE_SB": ("inode", "i_sb", 8),
    "OFF_SB_DEV": ("super_block", "s_dev", 4),
    "OFF_FILE_PATH": ("file", "f_path", 16),
    "OFF_PATH_DENTRY": ("path", "dentry", 8),
    "OFF_DENTRY_PARENT": ("dentry", "d_parent", 8),
    "OFF_DENTRY_INODE": ("dentry", "d_inode", 8),
    "OFF_DENTRY_NAME": ("dentry", "d_name", 16),
    "OFF_QSTR_NAME": ("qstr", "name", 8),
    "OFF_REGS_DI": ("pt_regs", "di", 8),
    "OFF_REGS_SI": ("pt_regs", "si", 8),
    "OFF_REGS_DX": ("pt_regs", "dx", 8),
    "OFF_REGS_R10": ("pt_regs", "r10", 8),
    "OFF_REGS_R8": ("pt_regs", "r8", 8),
    "OFF_REGS_R9": ("pt_regs", "r9", 8),
}
#: Where the x86-64 syscall ABI passes arguments 1 to 6 (another machine's BTF has none of these: its syscalls
#: keep their enter programs).
REGISTERS = ("OFF_REGS_DI", "OFF_REGS_SI", "OFF_REGS_DX", "OFF_REGS_R10", "OFF_REGS_R8", "OFF_REGS_R9")
#: The syscalls whose exit alone makes the record, from the caller's registers, given BTF offsets: the opens the
#: prefilter decides and the closes of what it kept, the commonest syscalls a node traces. Their tracepoint
#: arguments in the syscall's order (tracefs lists them so; a live test checks).
EXIT_ARGS: dict[str, tuple[str, ...]] = {
    "open": ("filename", "flags", "mode"),
    "openat": ("dfd", "filename", "flags", "mode"),
    "openat2": ("dfd", "filename", "how", "usize"),
    "creat": ("pathname", "mode"),
    "close": ("fd",),
}
#: The most 8-byte words one read of an inode may cover (its number and superblock pointer).
INODE_SPAN_MAX_WORDS = 16
#: Files the watched map holds at most (watched_files.py scans no further).
WATCHED_FILES_MAX = 65536
#: The tracepoint arguments that name a directory by descriptor.
_DIRFD_ARGS = ("dfd", "olddfd", "newdfd")
#: The opener's own descriptor links: an open through one of a kept descriptor sends that descriptor's open first.
_OWN_FD_LINKS = ("/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/")
#: Where an openat record keeps its dirfd, flags and mode (its value arguments come first: saved_slots).
_OWN_FD_LINK_TESTS = " : ".join(
    "(" + " && ".join(f"p[{i}] == '{c}'" for i, c in enumerate(link)) + f") ? {len(link)}"
    for link in _OWN_FD_LINKS) + " : -1"
_OPENAT_VALUES = [p.arg or p.copy.value for p in SYSCALLS["openat"].params if not p.copy.from_user_memory
                  and p.copy is not Copy.RESULT]
_OPENAT_SLOTS = tuple(_OPENAT_VALUES.index(arg)
                      for arg in ("dfd", "flags", "mode", "file_dev", "file_ino", "dir_ino"))
_O_PATH, _O_DIRECTORY, _O_CREAT, _O_TMPFILE = 0o10000000, 0o200000, 0o100, 0o20200000

_PRELUDE = f"""
#include <linux/capability.h>  /* types named by the capset tracepoint */
#define DATA_MAX {DATA_MAX}
#define STR_MAX {STR_MAX}
#define ARGV_MAX {ARGV_MAX}
#define SOCKADDR_MAX {SOCKADDR_MAX}

struct event {{
    u64 ts;
    u64 cgroup_id;
    u32 tid;
    u32 tgid;
    u32 uid;
    u32 gid;
    s64 res;
    u64 args[{MAX_ARGS}];
    u16 type;
    u16 nparts;
    u16 lens[{MAX_PARTS}];
    char comm[16];
    u16 cpu;  /* where the record is written: the syscall's exit */
    char data[4 * DATA_MAX - {HEADER.size}];  /* whole struct: 4 * DATA_MAX, so a mask bounds sizes */
}};

struct pending {{
    u64 ts;
    u64 args[{MAX_ARGS}];
    u64 sk;  /* a TCP connect's socket, as the sock tracepoint names it: an opaque key, never read */
    u32 type;
    u32 armed;
}};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERCPU_ARRAY(scratch, struct event, 1);
BPF_PERCPU_ARRAY(counters, u64, {COUNTERS});
BPF_PERCPU_ARRAY(since_wakeup, u64, 1);
BPF_ARRAY(self_tgid, u32, 1);
BPF_TABLE("lru_hash", u32, struct pending, pending, 65536);
BPF_TABLE("lru_hash", u32, struct event, pending_exec, 256);

static __always_inline void count(u32 index) {{
    u64 *value = counters.lookup(&index);
    if (value) *value += 1;
}}

static __always_inline int is_self(u64 id) {{
    u32 zero = 0;
    u32 *me = self_tgid.lookup(&zero);
    return me && *me == (u32)(id >> 32);
}}

static __always_inline struct event *new_event(u32 type, u64 id) {{
    u32 zero = 0;
    struct event *e = scratch.lookup(&zero);
    if (!e) return 0;
    u64 ugid = bpf_get_current_uid_gid();
    e->ts = bpf_ktime_get_boot_ns();
    /* The cgroup v2 id names the container without reading /proc, which a short-lived process outruns. */
    e->cgroup_id = bpf_get_current_cgroup_id();
    e->tid = (u32)id;
    e->tgid = id >> 32;
    e->uid = (u32)ugid;
    e->gid = ugid >> 32;
    e->res = 0;
    e->type = type;
    e->nparts = 0;
    e->cpu = bpf_get_smp_processor_id();
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    return e;
}}

/* The mask in asm so that clang cannot drop it after the range check: the verifier needs it. */
static __always_inline u32 bounded(u32 off) {{
    asm volatile("%0 &= %1" : "+r"(off) : "i"(DATA_MAX - 1));
    return off;
}}

/* A string of user memory, or (`kernel`, a constant) of the kernel's. */
static __always_inline u32 put_str(struct event *e, u32 part, u32 off, u64 src, int kernel) {{
    int n = 0;
    if (src && off < DATA_MAX)
        n = kernel ? bpf_probe_read_kernel_str(&e->data[bounded(off)], STR_MAX, (const void *)src)
                   : bpf_probe_read_user_str(&e->data[bounded(off)], STR_MAX, (const void *)src);
    if (n < 0) n = 0;
    if (part < {MAX_PARTS}) e->lens[part] = n;
    e->nparts = part + 1;
    return off + n;
}}

static __always_inline u32 put_bytes(struct event *e, u32 part, u32 off, u64 src, u64 len) {{
    if (len > SOCKADDR_MAX) len = SOCKADDR_MAX;
    if (!src || off >= DATA_MAX || bpf_probe_read_user(&e->data[bounded(off)], len & 0xff,
                                                     (const void *)src) < 0)
        len = 0;
    if (part < {MAX_PARTS}) e->lens[part] = len;
    e->nparts = part + 1;
    return off + len;
}}

#ifdef SNAPLEN
/* The first bytes of an I/O buffer; the mask (a power of two above SNAPLEN) bounds the size for the verifier. */
static __always_inline u32 put_data(struct event *e, u32 part, u32 off, u64 src, s64 len) {{
    u32 n = len < 0 ? 0 : (len > SNAPLEN ? SNAPLEN : (u32)len);
    asm volatile("%0 &= %1" : "+r"(n) : "i"(SNAPLEN_MASK));
    if (!src || off >= DATA_MAX || bpf_probe_read_user(&e->data[bounded(off)], n, (const void *)src) < 0)
        n = 0;
    if (part < {MAX_PARTS}) e->lens[part] = n;
    e->nparts = part + 1;
    return off + n;
}}
#endif

static __always_inline u32 put_argv(struct event *e, u32 part, u32 off, u64 argv) {{
    u32 start = off;
    #pragma unroll
    for (int i = 0; i < ARGV_MAX; i++) {{
        u64 ptr = 0;
        if (!argv || off >= DATA_MAX) break;
        if (bpf_probe_read_user(&ptr, sizeof(ptr), (const void *)(argv + i * sizeof(u64))) < 0 || !ptr) break;
        int n = bpf_probe_read_user_str(&e->data[bounded(off)], STR_MAX, (const void *)ptr);
        if (n <= 0) break;
        off += n;
    }}
    if (part < {MAX_PARTS}) e->lens[part] = off - start;
    e->nparts = part + 1;
    return off;
}}

/* BPF_RB_FORCE_WAKEUP once every WAKEUP_EVERY records of this CPU, else BPF_RB_NO_WAKEUP. */
static __always_inline u64 wakeup_flag(void) {{
    u32 zero = 0;
    u64 *written = since_wakeup.lookup(&zero);
    if (!written) return 0;
    if (++*written < {WAKEUP_EVERY}) return 1;
    *written = 0;
    return 2;
}}

static __always_inline void submit(struct event *e, u32 off) {{
    u32 size = {HEADER.size} + off;
    asm volatile("%0 &= %1" : "+r"(size) : "i"(4 * DATA_MAX - 1));
    if (events.ringbuf_output(e, size, wakeup_flag()) != 0) count({COUNTER_LOST});
}}

/* A file by device (as stat shows it) and inode: the name of a file whatever path or link reached it. */
struct file_id {{
    u64 dev;
    u64 ino;
}};
#ifdef BTF_OFFSETS
/* The files the rules name (watched_files.py): an open of one always leaves the kernel. */
BPF_HASH(watched_files, struct file_id, u8, {WATCHED_FILES_MAX});

/* A load through a pointer the verifier knows by its BTF type (the task, then what its members point to):
   a plain load, where a probe read is a helper call. */
static __always_inline u64 btf_load(u64 base, u64 off) {{
    return *(volatile u64 *)(base + off);
}}

/* Descriptor -> struct file -> inode, through the task's file table, at the offsets BTF gave: the task's files,
   its fd table and the descriptor array are typed loads; the file and the inode (the array's elements are
   untyped) take a probe read each, the inode's number and superblock one read together. */
static __always_inline u64 file_of(s64 fd, struct file_id *f) {{
    f->dev = f->ino = 0;
    if (fd < 0) return 0;
    u64 fdt = btf_load(btf_load((u64)bpf_get_current_task_btf(), OFF_TASK_FILES), OFF_FILES_FDT);
    u32 max = *(volatile u32 *)(fdt + OFF_FDT_MAX_FDS);
    if ((u64)fd >= max) return 0;
    u64 file = btf_load(btf_load(fdt, OFF_FDT_FD), 8 * (u64)fd);
    u64 inode = 0;
    if (!file || bpf_probe_read_kernel(&inode, sizeof(inode), (const void *)(file + OFF_FILE_INODE)) < 0 || !inode)
        return 0;
    u64 span[INODE_SPAN_WORDS] = {{}};
    if (bpf_probe_read_kernel(span, sizeof(span), (const void *)(inode + INODE_SPAN_AT)) < 0) return 0;
    u64 sb = span[(OFF_INODE_SB - INODE_SPAN_AT) / 8];
    u32 sdev = 0;
    if (!sb || bpf_probe_read_kernel(&sdev, sizeof(sdev), (const void *)(sb + OFF_SB_DEV)) < 0) return 0;
    f->ino = span[(OFF_INODE_INO - INODE_SPAN_AT) / 8];
    /* The kernel keeps major << 20 | minor; stat shows the encoding new_encode_dev makes. */
    u64 major = sdev >> 20, minor = sdev & 0xfffff;
    f->dev = (minor & 0xff) | (major << 8) | ((minor & ~0xffULL) << 12);
    return file;
}}

static __always_inline int watched(struct file_id *f) {{
    return f->ino && watched_files.lookup(f) != 0;
}}

/* A file made in a directory the rules name, which no scan has found yet: the directory's inode number (0
   otherwise) and, in `name`, the address of the file's name in it. Four reads: only creating opens ask. */
static __always_inline u64 created_in_watched(u64 file, u64 dev, u64 *name) {{
    u64 dentry = 0, parent = 0, dir = 0;
    struct file_id d = {{dev, 0}};
    if (bpf_probe_read_kernel(&dentry, 8, (const void *)(file + OFF_FILE_PATH + OFF_PATH_DENTRY)) < 0 || !dentry)
        return 0;
    if (bpf_probe_read_kernel(&parent, 8, (const void *)(dentry + OFF_DENTRY_PARENT)) < 0 || !parent) return 0;
    if (bpf_probe_read_kernel(&dir, 8, (const void *)(parent + OFF_DENTRY_INODE)) < 0 || !dir) return 0;
    if (bpf_probe_read_kernel(&d.ino, 8, (const void *)(dir + OFF_INODE_INO)) < 0 || !watched(&d)) return 0;
    if (bpf_probe_read_kernel(name, 8, (const void *)(dentry + OFF_DENTRY_NAME + OFF_QSTR_NAME)) < 0) return 0;
    return d.ino;
}}
#else
/* No BTF to find the kernel's structs by: files are known by their paths only. */
static __always_inline u64 file_of(s64 fd, struct file_id *f) {{
    f->dev = f->ino = 0;
    return 0;
}}

static __always_inline int watched(struct file_id *f) {{
    return 0;
}}

static __always_inline u64 created_in_watched(u64 file, u64 dev, u64 *name) {{
    return 0;
}}
#endif

/* The prefilter (prefilter.py): user space fills the maps; a type not enabled passes everything. */
struct path_key {{
    u32 prefixlen;
    char path[{PATH_KEY}];
}};
BPF_LPM_TRIE(filter_paths, struct path_key, u64, 16384);
BPF_LPM_TRIE(filter_suffixes, struct path_key, u64, 4096);
BPF_ARRAY(filter_settings, u64, {FILTER_SLOTS});
BPF_PERCPU_ARRAY(filter_scratch, struct path_key, 2);
BPF_PERCPU_ARRAY(filtered, u64, {len(TYPE_IDS)});
struct hidden {{
    u32 len;  /* of the path, NUL included */
    u32 flags;
    char path[{PATH_KEY}];
}};
BPF_PERCPU_ARRAY(hidden_scratch, struct hidden, 1);
BPF_TABLE("lru_hash", u64, struct hidden, hidden_fds, {HIDDEN_FDS_MAX});

static __always_inline u64 setting(u32 index) {{
    u64 *value = filter_settings.lookup(&index);
    return value ? *value : 0;
}}

static __always_inline u64 fd_key(u64 id, s64 fd) {{
    return (id & 0xffffffff00000000ULL) | (u32)fd;
}}

/* A descriptor's slot stays when it is closed or revealed, marked free (len 0): processes reuse their descriptor
   numbers, and writing the slot in place spares the traced syscalls a hash update and a delete each. */
/* Remember a kept open (its path is still in the prefilter's key) under its descriptor. */
static __always_inline void hide_fd(u64 id, s64 fd, u64 flags, u32 len) {{
    u32 zero = 0;
    struct path_key *k = filter_scratch.lookup(&zero);
    if (!k) return;
    u64 key = fd_key(id, fd);
    struct hidden *h = hidden_fds.lookup(&key);
    int fresh = !h;  /* a number this process has not had kept: filled in the scratch, then inserted */
    if (fresh) h = hidden_scratch.lookup(&zero);
    if (!h) return;
    h->len = 0;  /* free while the path changes */
    if (bpf_probe_read_kernel(h->path, {PATH_KEY}, k->path) < 0) return;
    h->flags = flags;
    h->len = len;
    if (fresh) hidden_fds.update(&key, h);
}}

static __always_inline void reveal_fd(u64 id, s64 fd) {{
    u64 key = fd_key(id, fd);
    struct hidden *h = hidden_fds.lookup(&key);
    if (h) h->len = 0;
}}

/* True (and forgotten) when the prefilter kept the open of this descriptor in the kernel. */
static __always_inline int take_hidden(u64 id, s64 fd) {{
    u64 key = fd_key(id, fd);
    struct hidden *h = hidden_fds.lookup(&key);
    if (!h || !h->len) return 0;
    h->len = 0;
    return 1;
}}

static __always_inline void count_filtered(u32 type) {{
    u64 *value = filtered.lookup(&type);
    if (value) *value += 1;
}}

/* A descriptor whose open was kept is used as a directory: send that open now (before this syscall's record),
   so user space can name what the syscall resolves against. */
static __always_inline void reveal(u64 id, s64 fd, u64 ts) {{
    if (fd < 0) return;
    u64 key = fd_key(id, fd);
    struct hidden *h = hidden_fds.lookup(&key);
    if (!h || !h->len) return;
    struct event *e = new_event({TYPE_IDS["openat"]}, id);
    if (e) {{
        u32 n = h->len;
        if (n > {PATH_KEY}) n = {PATH_KEY};
        if (ts) e->ts = ts;  /* 0: the time it is sent, before the record of the syscall using it */
        e->res = fd;
        e->args[{_OPENAT_SLOTS[0]}] = (u64)(s64)-100;  /* AT_FDCWD: the path is absolute */
        e->args[{_OPENAT_SLOTS[1]}] = h->flags;
        e->args[{_OPENAT_SLOTS[2]}] = 0;
        struct file_id fid;
        file_of(fd, &fid);
        e->args[{_OPENAT_SLOTS[3]}] = fid.dev;
        e->args[{_OPENAT_SLOTS[4]}] = fid.ino;
        e->args[{_OPENAT_SLOTS[5]}] = 0;  /* a kept open was made in no watched directory */
        bpf_probe_read_kernel(e->data, {PATH_KEY}, h->path);
        e->lens[0] = n;
        e->nparts = 1;
        submit(e, n);
        count({COUNTER_REVEALED});
    }}
    h->len = 0;
}}

/* The descriptor number N of a path `/dev/fd/N`, `/proc/self/fd/N` or `/proc/thread-self/fd/N`; -1 otherwise. */
static __always_inline s64 own_fd_link(const char *p) {{
    int at = {_OWN_FD_LINK_TESTS};
    if (at < 0) return -1;
    s64 fd = 0;
    for (int i = 0; i < 8; i++) {{
        char c = p[(at + i) & ({PATH_KEY} - 1)];
        if (!c) return i ? fd : -1;
        if (c < '0' || c > '9') return -1;
        fd = fd * 10 + (c - '0');
    }}
    return -1;
}}

/* True when no rule can match this open: it stays in the kernel. Decided before the record is built, from the
   path read again from user memory. Anything undecided passes. */
static __always_inline int open_kept(u32 type, u64 path, u64 flags, s64 res, u32 *len) {{
    if (!setting(type * {FILTER_PER_TYPE})) return 0;
    if (flags & ({_O_PATH} | {_O_DIRECTORY})) return 0;  /* a descriptor later opens are relative to */
    u32 zero = 0;
    struct path_key *k = filter_scratch.lookup(&zero);
    if (!k || !path) return 0;
    int n = bpf_probe_read_user_str(k->path, {PATH_KEY}, (const void *)path);  /* NUL included */
    if (n < 2 || n >= {PATH_KEY} || k->path[0] != '/') return 0;  /* a path that fills the key may be cut */
    *len = n;
    s64 linked = own_fd_link(k->path);
    if (linked >= 0) {{
        reveal(bpf_get_current_pid_tgid(), linked, bpf_ktime_get_boot_ns() - 1);
        return 0;
    }}
    char prev = 0;
    for (int i = 0; i < {PATH_KEY}; i++) {{
        char c = k->path[i];
        if (!c) break;
        /* `//`, `/.`, `./`: the path may not be what it says (user space folds it), or a rule looks for that */
        if ((prev == '/' && (c == '/' || c == '.')) || (prev == '.' && c == '/')) return 0;
        prev = c;
    }}
    if (prev == '/' && n > 2) return 0;  /* a trailing slash: user space drops it, so suffixes would not line up */
    k->prefixlen = {PATH_KEY} * 8;
    u64 *hit = filter_paths.lookup(k);
    u64 terms = (hit ? *hit : 0) | setting(type * {FILTER_PER_TYPE} + 1);
    u32 one = 1;
    struct path_key *r = setting({FILTER_SUFFIXES_AT}) ? filter_scratch.lookup(&one) : 0;
    if (r) {{
        u32 m = n - 1;  /* the path without its NUL, reversed: suffixes become prefixes */
        for (int i = 0; i < {PATH_KEY}; i++) {{
            if (i >= m) break;
            u32 at = m - 1 - i;
            asm volatile("%0 &= %1" : "+r"(at) : "i"({PATH_KEY} - 1));
            r->path[i] = k->path[at];
        }}
        r->prefixlen = m * 8;
        hit = filter_suffixes.lookup(r);
        if (hit) terms |= *hit;
    }}
    u32 acc = flags & 3;
    u32 facts = (acc == 0 || acc == 2 ? {int(OpenFact.READS)} : 0) | (acc == 1 || acc == 2 ? {int(OpenFact.WRITES)} : 0)
        | (flags & {_O_CREAT} || (flags & {_O_TMPFILE}) == {_O_TMPFILE} ? {int(OpenFact.CREATES)} : 0)
        | (res >= 0 ? {int(OpenFact.SUCCEEDS)} : 0);
    terms &= setting(type * {FILTER_PER_TYPE} + 2) & setting({FILTER_FACTS_AT} + facts);
    return terms == 0;
}}

/* A thread's pending slot stays in the map between its syscalls (an exit disarms it, procexit removes it): an enter
   then writes in place instead of inserting, which costs the traced syscall a hash update each time. */
static __always_inline struct pending *pending_get(u32 tid) {{
    struct pending *p = pending.lookup(&tid);
    return p && p->armed ? p : 0;
}}

static __always_inline void save_enter(u64 id, u32 type, u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {{
    u32 tid = (u32)id;
    struct pending *p = pending.lookup(&tid);
    if (!p) {{
        struct pending fresh = {{}};
        pending.update(&tid, &fresh);
        p = pending.lookup(&tid);
        if (!p) return;
    }}
    p->ts = bpf_ktime_get_boot_ns();
    p->type = type;
    p->sk = 0;
    p->args[0] = a0; p->args[1] = a1; p->args[2] = a2; p->args[3] = a3; p->args[4] = a4; p->args[5] = a5;
    p->armed = 1;
}}
"""


def saved_slots(spec: SyscallSpec) -> list[str]:
    """The tracepoint arguments to save at enter, in slot order: values first, then user addresses."""
    values = [p.arg for p in spec.params if p.copy is Copy.VALUE]
    addresses = [p.arg for p in spec.params if p.copy.from_user_memory]
    lengths = [p.length for p in spec.params if isinstance(p.length, str) and p.length]
    return values + addresses + [name for name in lengths if name not in values]


def _slot(spec: SyscallSpec, arg: str) -> int:
    return saved_slots(spec).index(arg)


def _copy_part(spec: SyscallSpec, param: Param, part: int, source: str) -> str:
    """C statement appending one user-memory parameter; `source` holds the saved slots."""
    address = f"{source}[{_slot(spec, param.arg)}]"
    if param.copy is Copy.DATA_READ:
        return f"off = put_data(e, {part}, off, {address}, e->res);"
    if param.copy is Copy.DATA_WRITTEN:
        return f"off = put_data(e, {part}, off, {address}, (s64){source}[{_slot(spec, str(param.length))}]);"
    if param.copy is Copy.USER_STR:
        return f"off = put_str(e, {part}, off, {address}, 0);"
    if param.copy is Copy.USER_ARGV:
        return f"off = put_argv(e, {part}, off, {address});"
    if isinstance(param.length, int):
        length = str(param.length)
    elif param.copy is Copy.USER_BYTES_LENPTR:
        length = (f"({{ int l = 0; bpf_probe_read_user(&l, sizeof(l), (const void *){source}"
                  f"[{_slot(spec, param.length)}]); l < 0 ? 0 : l; }})")
    else:
        length = f"{source}[{_slot(spec, param.length)}]"
    return f"off = put_bytes(e, {part}, off, {address}, {length});"


def _user_parts(spec: SyscallSpec, source: str, *, with_buffer: bool = False) -> list[str]:
    """Copies of the user-memory parameters; the I/O buffer (the last part) only `with_buffer`."""
    parts = [p for p in user_params(spec) if with_buffer or p.copy not in (Copy.DATA_READ, Copy.DATA_WRITTEN)]
    return [_copy_part(spec, p, k, source) if p.copy is not Copy.DIRENT_NAME
            else f"if (dir_ino) off = put_str(e, {k}, off, dirent, 1);" for k, p in enumerate(parts)]


def _value_copies(spec: SyscallSpec, source: str) -> list[str]:
    """The record's slots: the saved values, then the file's device and inode (FILE_DEV and FILE_INO come after
    every VALUE parameter, as the decoder reads them)."""
    count = sum(1 for p in spec.params if p.copy is Copy.VALUE)
    copies = [f"e->args[{i}] = {source}[{i}];" for i in range(count)]
    file_id = {Copy.FILE_DEV: "fid.dev", Copy.FILE_INO: "fid.ino", Copy.DIR_INO: "dir_ino"}
    copies += [f"e->args[{count + i}] = {file_id[p.copy]};"
               for i, p in enumerate(p for p in spec.params if p.copy in file_id)]
    return copies


def _opened_file() -> str:
    """C finding, once the open's `flags` are known, the file its result names (`fid`) and, for a creating open of
    a file no scan found, the watched directory it was made in (`dir_ino`, `dirent`). Whether the rules name the
    file is asked where it decides something: most opens are decided without it."""
    return (" struct file_id fid; u64 file = file_of(args->ret, &fid);"
            f" u64 dir_ino = 0, dirent = 0; if (file && (flags & {_O_CREAT}) && !watched(&fid))"
            " dir_ino = created_in_watched(file, fid.dev, &dirent);")


def _saved(spec: SyscallSpec) -> str:
    args = [f"(u64)args->{name}" for name in saved_slots(spec)]
    if len(args) > MAX_ARGS:
        raise ValueError(f"syscall {spec.name}: more than {MAX_ARGS} arguments to save")
    return ", ".join(args + ["0"] * (MAX_ARGS - len(args)))


@dataclass(frozen=True, slots=True)
class _Saved:
    """Where an exit program finds what the syscall was called with: the arguments (slots of saved_slots), the
    record's time ("": the time the record is made), and the statement that forgets them."""

    args: str
    ts: str
    forget: str


_FROM_ENTER = _Saved("p->args", "p->ts", "p->armed = 0;")
_AT_EXIT = _Saved("a", "", "")


def _exit_body(spec: SyscallSpec, saved: _Saved, *, with_buffer: bool) -> str:
    """The exit's work once the arguments are at hand: what stays in the kernel, then the record."""
    type_id = TYPE_IDS[spec.name]
    local = [f"e->args[{slot}] = p->args[{slot}];" for slot in LOCAL_SLOTS] if spec.tcp_local else []
    if spec.tcp_local:
        # The port comes last: the kernel picks it after SYN_SENT and it is known once the handshake is done.
        local.append(f"if (p->sk) {{ u16 *port = tcp_ports.lookup(&p->sk); "
                     f"if (port) {{ e->args[{LOCAL_SLOTS[0]}] |= *port; tcp_ports.delete(&p->sk); }} }}")
    body = "\n        ".join(_value_copies(spec, saved.args) + local
                              + _user_parts(spec, saved.args, with_buffer=with_buffer))
    dirfds = [p.arg for p in spec.params if p.copy is Copy.VALUE and p.kind is ParamKind.FD
              and (p.arg in _DIRFD_ARGS or spec.name == "fchdir")]
    before = f"{saved.ts} - 1" if saved.ts else "0"  # the kept open comes first
    hidden = " ".join(f"reveal(id, (s32){saved.args}[{_slot(spec, arg)}], {before});" for arg in dirfds)
    if spec.name in OPEN_TYPES:
        path = next(param.arg for param in spec.params if param.kind is ParamKind.PATH)
        # A file the rules name leaves the kernel whatever path reached it (a link, a bind mount). The flags are
        # read once: openat2 keeps them in user memory.
        hidden += f" u64 flags = {_open_flags(spec, saved)};" + _opened_file()
        hidden += (f" u32 len = 0; if (open_kept({type_id}, {saved.args}[{_slot(spec, path)}], flags, args->ret,"
                   f" &len) && !dir_ino && !watched(&fid)) "
                   f"{{ count_filtered({type_id}); if (args->ret >= 0) hide_fd(id, args->ret, flags, len); "
                   f"{saved.forget} return 0; }}")
    return f"""{hidden}
    struct event *e = new_event({type_id}, id);
    if (e) {{
        u32 off = 0;
        {f"e->ts = {saved.ts};" if saved.ts else ""}
        e->res = args->ret;
        {body}
        {_fd_result_submit(spec)}
    }}
    {saved.forget}"""


def _joined(spec: SyscallSpec, *, with_buffer: bool) -> str:
    """Enter saves the arguments; exit copies user memory and writes the record."""
    type_id = TYPE_IDS[spec.name]
    kept_at_enter = ""
    unsaved = f"if (!is_self(id)) count({COUNTER_NO_ENTER}); "
    if spec.name == "close":
        # A descriptor user space never saw: its close tells it nothing. Decided at enter, where the descriptor is
        # known, so that nothing is saved for the exit (an exit without its enter is then expected, not counted).
        kept_at_enter = f"if (take_hidden(id, (s64)args->fd)) {{ count_filtered({type_id}); return 0; }}"
        unsaved = ""
    return f"""
TRACEPOINT_PROBE(syscalls, sys_enter_{spec.syscall}) {{
    u64 id = bpf_get_current_pid_tgid();
    if (is_self(id)) return 0;
    {kept_at_enter}
    save_enter(id, {type_id}, {_saved(spec)});
    return 0;
}}

TRACEPOINT_PROBE(syscalls, sys_exit_{spec.syscall}) {{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct pending *p = pending_get(tid);
    if (!p) {{ {unsaved}return 0; }}
    if (p->type != {type_id}) return 0;
    {_exit_body(spec, _FROM_ENTER, with_buffer=with_buffer)}
    return 0;
}}
"""


def _at_exit(spec: SyscallSpec, *, with_buffer: bool) -> str:
    """No enter program: the exit reads the arguments from the caller's registers, which the syscall's return
    leaves as they were but for ax. Half the programs per syscall, and no per-thread slot to write and read."""
    type_id = TYPE_IDS[spec.name]
    order = EXIT_ARGS[spec.name]
    registers = ", ".join(f"btf_load(regs, {REGISTERS[order.index(arg)]})" for arg in saved_slots(spec))
    kept = (f"if (take_hidden(id, (s64)a[{_slot(spec, 'fd')}])) {{ count_filtered({type_id}); return 0; }}"
            if spec.name == "close" else "")
    return f"""
TRACEPOINT_PROBE(syscalls, sys_exit_{spec.syscall}) {{
    u64 id = bpf_get_current_pid_tgid();
    if (is_self(id)) return 0;
    u64 regs = (u64)bpf_task_pt_regs(bpf_get_current_task_btf());
    u64 a[{MAX_ARGS}] = {{{registers}}};
    {kept}
    {_exit_body(spec, _AT_EXIT, with_buffer=with_buffer)}
    return 0;
}}
"""


def _open_flags(spec: SyscallSpec, saved: _Saved) -> str:
    """C expression of an open's flags at its exit (openat2 keeps them in user memory, at the start of its
    struct open_how)."""
    if spec.name == "creat":
        return "0x241"  # O_WRONLY | O_CREAT | O_TRUNC
    if spec.name == "openat2":
        return (f"({{ u64 f = 0; bpf_probe_read_user(&f, sizeof(f), (const void *){saved.args}"
                f"[{_slot(spec, 'how')}]); f; }})")
    return f"{saved.args}[{_slot(spec, 'flags')}]"


def _fd_result_submit(spec: SyscallSpec) -> str:
    """A syscall returning a new descriptor: that number now names something user space saw."""
    if spec.params and spec.params[0].copy is Copy.RESULT and spec.params[0].kind is ParamKind.FD:
        return "if (e->res >= 0) reveal_fd(id, e->res); submit(e, off);"
    return "submit(e, off);"


def _exec(spec: SyscallSpec) -> str:
    """execve's user memory is gone at exit: copy it at enter into a per-thread record."""
    type_id = TYPE_IDS[spec.name]
    saved = [f"u64 a[{MAX_ARGS}] = {{{_saved(spec)}}};"]
    body = "\n    ".join(saved + _value_copies(spec, "a") + _user_parts(spec, "a"))
    return f"""
TRACEPOINT_PROBE(syscalls, sys_enter_{spec.syscall}) {{
    u64 id = bpf_get_current_pid_tgid();
    if (is_self(id)) return 0;
    struct event *e = new_event({type_id}, id);
    if (!e) return 0;
    u32 off = 0;
    {body}
    e->res = off;  /* the data length until exit puts the result here */
    u32 tid = (u32)id;
    pending_exec.update(&tid, e);
    return 0;
}}

TRACEPOINT_PROBE(syscalls, sys_exit_{spec.syscall}) {{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct event *e = pending_exec.lookup(&tid);
    if (!e) {{ if (!is_self(id)) count({COUNTER_NO_ENTER}); return 0; }}
    u32 off = (u32)e->res;
    u64 ugid = bpf_get_current_uid_gid();
    e->res = args->ret;
    e->uid = (u32)ugid;
    e->gid = ugid >> 32;
    e->cpu = bpf_get_smp_processor_id();
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    submit(e, off);
    pending_exec.delete(&tid);
    return 0;
}}
"""


def _clone_enter(name: str, flags: str) -> str:
    return f"""
TRACEPOINT_PROBE(syscalls, sys_enter_{name}) {{
    u64 id = bpf_get_current_pid_tgid();
    if (is_self(id)) return 0;
    u64 flags = {flags};
    save_enter(id, {TYPE_IDS[name]}, flags, 0, 0, 0, 0, 0);
    return 0;
}}
"""


_CLONE_FLAGS = {
    "clone": "args->clone_flags",
    # struct clone_args starts with the flags: user memory, not a kernel struct.
    "clone3": "({ u64 f = 0; bpf_probe_read_user(&f, sizeof(f), (const void *)args->uargs); f; })",
    "fork": "17",            # SIGCHLD
    "vfork": "0x4111",       # CLONE_VM | CLONE_VFORK | SIGCHLD
}

_SCHED = f"""
TRACEPOINT_PROBE(sched, sched_process_fork) {{
    u64 id = bpf_get_current_pid_tgid();
    if (is_self(id)) return 0;
    u32 tid = (u32)id;
    u32 type = {TYPE_IDS["clone"]};
    u64 flags = 0;
    struct pending *p = pending_get(tid);
    if (p && p->type >= {TYPE_IDS["clone"]} && p->type <= {TYPE_IDS["vfork"]}) {{
        type = p->type;
        flags = p->args[0];
        p->armed = 0;
    }}
    struct event *e = new_event(type, id);
    if (!e) return 0;
    e->res = args->child_pid;
    e->args[0] = args->child_pid;
    e->args[1] = flags;
    submit(e, 0);
    return 0;
}}

TRACEPOINT_PROBE(sched, sched_process_exit) {{
    u64 id = bpf_get_current_pid_tgid();
    if (is_self(id)) return 0;
    u32 tid = (u32)id;
    pending.delete(&tid);
    struct event *e = new_event({TYPE_IDS["procexit"]}, id);
    if (!e) return 0;
    e->args[0] = args->group_dead;
    submit(e, 0);
    return 0;
}}
"""


def _tcp_local(spec: SyscallSpec) -> str:
    """The local end of a TCP connect from the sock tracepoint (its arguments, not the socket): SYN_SENT runs
    in the connecting thread and gives the address; the port, chosen after it, comes with ESTABLISHED. A
    blocking connect is still in the syscall then (its exit record carries the port); a non-blocking one has
    returned, so a `tcp_local` record brings the port to the fd state."""
    family, low, high = LOCAL_SLOTS
    connect = TYPE_IDS[spec.name]
    return f"""
struct tcp_owner {{
    u32 tid;
    u32 tgid;
    u64 fd;
}};
BPF_TABLE("lru_hash", u64, u16, tcp_ports, 4096);
BPF_TABLE("lru_hash", u64, struct tcp_owner, tcp_owners, 4096);

TRACEPOINT_PROBE(sock, inet_sock_set_state) {{
    u64 sk = (u64)args->skaddr;
    if (args->oldstate == 2 && args->newstate == 1 /* SYN_SENT -> ESTABLISHED, in any context */) {{
        struct tcp_owner *o = tcp_owners.lookup(&sk);
        if (!o) return 0;
        u16 port = args->sport;
        u32 tid = o->tid;
        struct pending *p = pending_get(tid);
        if (p && p->type == {connect} && p->sk == sk) {{
            tcp_ports.update(&sk, &port);
        }} else {{
            struct event *e = new_event({TYPE_IDS["tcp_local"]}, ((u64)o->tgid << 32) | o->tid);
            if (e) {{
                e->args[0] = o->fd;
                e->args[1] = port;
                submit(e, 0);
            }}
        }}
        tcp_owners.delete(&sk);
        return 0;
    }}
    if (args->newstate != 2 /* TCP_SYN_SENT */) return 0;
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct pending *p = pending_get(tid);
    if (!p || p->type != {connect}) return 0;
    u64 low = 0, high = 0;
    if (args->family == 2) {{
        #pragma unroll
        for (int i = 0; i < 4; i++) low |= (u64)args->saddr[i] << (8 * i);
    }} else {{
        #pragma unroll
        for (int i = 0; i < 8; i++) {{
            low |= (u64)args->saddr_v6[i] << (8 * i);
            high |= (u64)args->saddr_v6[8 + i] << (8 * i);
        }}
    }}
    p->args[{family}] = ((u64)args->family << 16) | args->sport;
    p->args[{low}] = low;
    p->args[{high}] = high;
    p->sk = sk;
    struct tcp_owner owner = {{tid, id >> 32, p->args[0]}};
    tcp_owners.update(&sk, &owner);
    return 0;
}}
"""


def _snaplen_defines(snaplen: int) -> list[str]:
    if not 0 < snaplen <= SNAPLEN_MAX:
        raise ValueError(f"snaplen must be between 1 and {SNAPLEN_MAX} bytes, not {snaplen}")
    return [f"#define SNAPLEN {snaplen}", f"#define SNAPLEN_MASK {(1 << snaplen.bit_length()) - 1}"]


def _inode_span(ino: int, sb: int) -> list[str]:
    """The one read covering an inode's number and superblock pointer (both 8-byte aligned, near each other)."""
    start = min(ino, sb)
    words = (max(ino, sb) - start) // 8 + 1
    if ino % 8 or sb % 8 or words > INODE_SPAN_MAX_WORDS:
        raise ValueError(f"inode.i_ino at {ino} and inode.i_sb at {sb} are not one aligned read apart")
    return [f"#define INODE_SPAN_AT {start}", f"#define INODE_SPAN_WORDS {words}"]


def generate(syscalls: Iterable[str], *, ring_buffer_pages: int, buffers: Iterable[str] = (),
             snaplen: int = DEFAULT_SNAPLEN, btf_offsets: Mapping[str, int] | None = None) -> str:
    """C source capturing `syscalls` (names from SYSCALLS) plus process lifecycle, for BCC.

    The I/O buffer of the syscalls in `buffers` (of BUFFER_SYSCALLS) is copied, at most `snaplen` bytes; the
    other records carry none, so a buffer costs nothing unless a rule reads it. `btf_offsets` (every key of
    BTF_MEMBERS) lets opens report their file's device and inode and keeps watched files out of the
    prefilter, and makes the EXIT_ARGS syscalls' records at their exit alone; without it opens report 0 and
    files are known by path only."""
    if ring_buffer_pages <= 0 or ring_buffer_pages & (ring_buffer_pages - 1):
        raise ValueError(f"ring_buffer_pages must be a power of two, not {ring_buffer_pages}")
    names = sorted(set(syscalls))
    unknown = [name for name in names if name not in SYSCALLS]
    if unknown:
        raise ValueError(f"cannot capture unknown syscalls: {', '.join(unknown)}")
    copied = set(buffers) & set(names)
    unbuffered = sorted(copied - BUFFER_SYSCALLS)
    if unbuffered:
        raise ValueError(f"syscalls without an I/O buffer: {', '.join(unbuffered)}")
    defines = _snaplen_defines(snaplen) if copied else []
    if btf_offsets is not None:
        missing = sorted(set(BTF_MEMBERS) - set(REGISTERS) - set(btf_offsets))
        if missing:
            raise ValueError(f"btf_offsets lacks {', '.join(missing)}")
        defines += ["#define BTF_OFFSETS 1", *(f"#define {name} {offset}" for name, offset in btf_offsets.items()),
                    *_inode_span(btf_offsets["OFF_INODE_INO"], btf_offsets["OFF_INODE_SB"])]
    parts = [f"#define RINGBUF_PAGES {ring_buffer_pages}", *defines, _PRELUDE, _SCHED]
    parts += [_clone_enter(name, _CLONE_FLAGS[name]) for name in CLONE_TYPES]
    for name in names:
        spec = SYSCALLS[name]
        if spec.tcp_local:
            parts.append(_tcp_local(spec))  # first: it declares the map the exit program reads
        if spec.read_at_enter:
            parts.append(_exec(spec))
        elif btf_offsets is not None and name in EXIT_ARGS and set(REGISTERS) <= set(btf_offsets):
            parts.append(_at_exit(spec, with_buffer=name in copied))
        else:
            parts.append(_joined(spec, with_buffer=name in copied))
    return "\n".join(parts)

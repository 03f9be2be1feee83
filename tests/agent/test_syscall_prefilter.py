"""The kernel prefilter's plan and maps, checked against the engine: an open the maps keep in the kernel is one no
loaded rule or correlation step matches (soundness), and opens no rule can match are kept (it filters at all)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.builtin_sources import new_engine
from agent.engine.ast import Check as CheckNode
from agent.engine.ast import ListLit, StrLit, walk
from agent.engine.engine import Engine
from agent.event import Event
from agent.syscall_prefilter import prefilter_plan
from sources.kernel.prefilter import ALWAYS_PASSED, PATH_KEY, EncodedFilter, OpenFact, encode
from tests.sources.kernel.state_fixtures import Stream

REPO = Path(__file__).resolve().parents[2]
STABLE = REPO.parent / "shared" / "reference" / "rules" / "falco_rules.yaml"

_O_PATH, _O_DIRECTORY, _O_TMPFILE = 0o10000000, 0o200000, 0o20200000


def kernel_keeps(encoded: EncodedFilter, syscall: str, path: str, flags: int, res: int) -> bool:
    """What the probe's open_kept decides (probe_program.py), in Python."""
    enabled, any_path, own = encoded.per_syscall.get(syscall, (False, 0, 0))
    raw = path.encode()
    if not enabled or flags & (_O_PATH | _O_DIRECTORY) or not raw.startswith(b"/") or len(raw) + 1 >= PATH_KEY:
        return False
    if any(part in raw for part in (b"//", b"/.", b"./")) or (raw.endswith(b"/") and raw != b"/"):
        return False
    terms = any_path | _longest(encoded.paths, raw + b"\0") | _longest(encoded.suffixes, raw[::-1])
    access = flags & 3
    facts = ((OpenFact.READS if access in (0, 2) else 0) | (OpenFact.WRITES if access in (1, 2) else 0)
             | (OpenFact.CREATES if flags & os.O_CREAT or flags & _O_TMPFILE == _O_TMPFILE else 0)
             | (OpenFact.SUCCEEDS if res >= 0 else 0))
    return terms & own & encoded.fact_bits[int(facts)] == 0


def _longest(entries: tuple[tuple[bytes, int], ...], key: bytes) -> int:
    """A longest-prefix-match lookup."""
    found = [(len(entry), bits) for entry, bits in entries if key.startswith(entry)]
    return max(found)[1] if found else 0


def _engine(*files: Path) -> Engine:
    engine = new_engine()
    assert engine.load_rules_files(list(files)).successful
    return engine


def _rules(tmp_path: Path, text: str) -> Engine:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return _engine(path)


def _rule(name: str, condition: str) -> str:
    return f"- rule: {name}\n  desc: d\n  condition: {condition}\n  output: o %fd.name\n  priority: WARNING\n"


def test_exact_prefix_and_suffix_paths_are_kept_apart_by_what_rules_name(tmp_path: Path) -> None:
    engine = _rules(tmp_path, _rule("exact", "evt.type = openat and fd.name = /etc/shadow")
                    + _rule("prefix", "evt.type = openat and evt.is_open_write=true and fd.name startswith /usr/bin/")
                    + _rule("suffix", "evt.type = openat and fd.filename in (id_rsa)")
                    + _rule("directory", "evt.type = openat and fd.directory = /etc/sudoers.d"))
    encoded = encode(prefilter_plan(engine))
    keeps = lambda path, flags=os.O_RDONLY: kernel_keeps(encoded, "openat", path, flags, 3)  # noqa: E731
    assert keeps("/etc/hostname") and keeps("/etc/shadowy/x")
    assert not keeps("/etc/shadow")
    assert keeps("/usr/bin/ls") and not keeps("/usr/bin/ls", os.O_WRONLY)
    assert not keeps("/home/alice/ssh/id_rsa") and not keeps("/root/id_rsa") and keeps("/root/id_rsa.pub")
    assert not keeps("/etc/sudoers.d/admins") and keeps("/etc/sudoers")
    # What the kernel cannot decide leaves it.
    for undecided in ("etc/hostname", "/etc//hostname", "/etc/./hostname", "/x/../etc/hostname", "/" + "a" * 300,
                      "/home/alice/id_rsa/"):
        assert not keeps(undecided)
    assert not kernel_keeps(encoded, "openat", "/etc/hostname", os.O_PATH, 3)
    assert not kernel_keeps(encoded, "openat", "/etc", os.O_DIRECTORY, 3)
    assert all(not keeps(prefix + "3") for prefix in ALWAYS_PASSED)
    # The files watched by inode: what the rules name exactly and by prefix (a suffix names no file to find).
    plan = prefilter_plan(engine)
    assert plan.named == {"/etc/shadow", "/etc/sudoers.d"}
    assert plan.named_prefixes == {"/usr/bin/", "/etc/sudoers.d/"}
    off = plan.keeping_none("off")
    assert all(needs is None for needs in off.needs.values()) and off.named == plan.named


def test_a_rule_that_bounds_no_path_makes_every_open_of_its_type_leave(tmp_path: Path) -> None:
    plan = prefilter_plan(_rules(tmp_path, _rule("negated", "evt.type = openat and not fd.name startswith /etc")
                                 + _rule("other", "evt.type = open and fd.name = /etc/shadow")))
    assert plan.needs["openat"] is None and "'negated'" in plan.reasons["openat"]
    assert plan.needs["open"] is not None


def test_a_rule_reading_descriptors_on_other_events_turns_the_prefilter_off(tmp_path: Path) -> None:
    plan = prefilter_plan(_rules(tmp_path, _rule("reads", "evt.type = read and fd.name = /etc/shadow")))
    assert all(needs is None for needs in plan.needs.values())
    assert "'reads' reads descriptors" in plan.reasons["openat"]
    assert plan.named == {"/etc/shadow"}, "the file an open rule names is still watched by inode"
    plan = prefilter_plan(_rules(tmp_path, _rule("stdout", "evt.type = write and proc.stdout.name = /tmp/log")))
    assert plan.needs["openat"] is None, "a file opened onto stdout and kept would leave proc.stdout.name empty"
    # A rule on sockets only, or on events without a file's descriptor, does not.
    plan = prefilter_plan(_rules(tmp_path, _rule("net", "evt.type = sendto and fd.type = ipv4 and fd.sport = 53")
                                 + _rule("exec", "evt.type = execve and fd.name = x")))
    assert plan.needs["openat"] == ()


def test_branches_of_other_event_types_bound_nothing(tmp_path: Path) -> None:
    plan = prefilter_plan(_rules(tmp_path, _rule(
        "mixed", "(evt.type = openat and fd.name pmatch (/bin)) or (evt.type = rename and evt.arg.newpath = x)")))
    needs = plan.needs["openat"]
    assert needs is not None and [n.prefixes for n in needs] == [frozenset({"/bin"})]
    assert plan.needs["open"] == ()  # the rule cannot match an open at all


def _literal_paths(engine: Engine) -> set[str]:
    """Every absolute path the syscall rules and steps compare with, and near misses of each."""
    ruleset = engine.ruleset("syscall")
    assert ruleset is not None
    conditions = [rule.condition for rule in ruleset.rules]
    conditions += [s.condition for c in engine.correlations for s in c.steps if s.source == "syscall"]
    found: set[str] = set()
    for condition in conditions:
        for node in walk(condition):
            if isinstance(node, CheckNode) and node.rhs is not None:
                items = node.rhs.items if isinstance(node.rhs, ListLit) else (node.rhs,)
                found |= {item.value for item in items if isinstance(item, StrLit) and item.value.startswith("/")}
    near = set()
    for path in found:
        near |= {path, path + "x", path.rstrip("/") + "/child", path.rstrip("/") + "/a/b", path[:-1] or "/",
                 os.path.dirname(path.rstrip("/")) or "/", "/tmp" + path, "/x/y/" + os.path.basename(path)}
    return {p for p in near if "//" not in p and "/." not in p and "./" not in p}


_SHIPPED = REPO / "rules"


@pytest.mark.skipif(not STABLE.is_file(), reason="needs ../shared/reference (the stable rules)")
@pytest.mark.parametrize("files", [
    (STABLE,), (_SHIPPED / "syscall.yaml",), (_SHIPPED / "correlation.yaml",),
    (STABLE, _SHIPPED / "syscall.yaml", _SHIPPED / "correlation.yaml"),
], ids=["stable", "shipped_syscall", "shipped_correlation", "together"])
def test_an_open_kept_in_the_kernel_is_one_no_rule_matches(files: tuple[Path, ...]) -> None:
    """Each file alone too: together, one file's rule can cover a path another's bound missed."""
    engine = _engine(*files)
    encoded = encode(prefilter_plan(engine))
    ruleset = engine.ruleset("syscall")
    assert ruleset is not None
    steps = [s for c in engine.correlations for s in c.steps if s.source == "syscall"]
    paths = sorted(_literal_paths(engine) | {"/etc/hostname", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/dev/null"})
    stream = Stream()
    # Programs no rule trusts, on the host and in a container (shells are excepted by many rules).
    stream.spawn(200, 400, "/usr/local/bin/implant")
    stream.spawn(300, 500, "/tmp/implant")
    kept = checked = 0
    for tid in (200, 300, 400, 500):
        for path in paths:
            for flags in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR | os.O_CREAT, os.O_WRONLY | os.O_TRUNC):
                for res in (5, -2):
                    event: Event = stream.record("openat", tid, res=res, dirfd=-100, name=path, flags=flags,
                                                 mode=0o755)
                    checked += 1
                    if not kernel_keeps(encoded, "openat", path, flags, res):
                        continue
                    kept += 1
                    matched = [r.name for r in ruleset.candidates(event) if r.predicate(event)]
                    matched += [s.name for s in steps if s.predicate(event)]
                    assert not matched, f"kept in the kernel, yet {matched} match {path} flags={flags:o} res={res}"
    assert kept > checked // 4, f"only {kept} of {checked} opens kept: the prefilter barely filters"


def test_pmatch_bounds_by_components_not_text(tmp_path: Path) -> None:
    """`fd.name pmatch (/etc/)` matches the directory /etc itself: its open must leave the kernel."""
    engine = _rules(tmp_path, _rule("pmatch", "evt.type = openat and fd.name pmatch (/etc/, /var/*/log)")
                    + _rule("dir", "evt.type = openat and fd.directory pmatch (/srv/)"))
    encoded = encode(prefilter_plan(engine))
    stream = Stream()
    for path in ("/etc", "/etc/x", "/var/lib/log/x", "/srv/a/b"):
        event = stream.record("openat", 200, res=5, dirfd=-100, name=path, flags=os.O_RDONLY, mode=0)
        assert any(r.predicate(event) for r in engine.ruleset("syscall").rules), path  # type: ignore[union-attr]
        assert not kernel_keeps(encoded, "openat", path, os.O_RDONLY, 5), path
    assert kernel_keeps(encoded, "openat", "/usr/bin/ls", os.O_RDONLY, 5)

"""The kernel prefilter's plan, derived from the loaded syscall rules and correlation steps.

For each open syscall, every rule or step that can match it says what it needs of an open: the facts its
condition requires (`evt.is_open_read=true`: it reads) and the paths it can be about (`fd.name`, `fd.directory`
exact values, lists, prefixes), both sound approximations (agent/engine/string_bounds.py). One candidate that
bounds neither makes every open of that syscall leave the kernel.

Keeping an open in the kernel also hides its descriptor from user space. That is only safe while no rule on
another event type reads the state of a descriptor a kept open could have made: a rule that may see a file's
descriptor on, say, `read` or `fcntl` and names an `fd.*` field turns the prefilter off, named in the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.engine.ast import Expr
from agent.engine.engine import Engine
from agent.engine.rule_fields import field_names
from agent.engine.rule_guards import GuardField, guard_field
from agent.engine.ruleset import NONE, ValueSet, possible_values
from agent.engine.string_bounds import (
    GLOB_SPECIALS,
    AtomBound,
    AtomFacts,
    StringBound,
    necessary_facts,
    string_bound,
)
from agent.source import PathParts
from sources.kernel.fields import SOURCE_NAME as SYSCALL
from sources.kernel.prefilter import PLAIN_BREAKERS, OpenFact, OpenNeed, PrefilterPlan
from sources.kernel.state.fd_events import OPEN_TYPES

#: Field checks whose truth needs a fact of the open (a boolean field compared with true).
_FACT_FIELDS = {
    "evt.is_open_read": "READS",
    "evt.is_open_write": "WRITES",
    "evt.is_open_create": "CREATES",
    "evt.is_open_exec": "CREATES",  # an open that may create an executable creates
}
#: Fields whose `>= 0` (or `> n`, n >= 0) check needs the open to succeed.
_RESULT_FIELDS = frozenset({"fd.num", "evt.rawres"})
#: Event types whose `fd.*` fields describe no descriptor a file open made: the process's new socket, or none.
_NO_FILE_FD_TYPES = frozenset({
    "execve", "execveat", "clone", "clone3", "fork", "vfork", "procexit", "socket", "socketpair", "connect",
    "accept", "accept4", "bind", "listen", "tcp_local", "setuid", "setgid", "setreuid", "setregid", "setresuid",
    "setresgid", "setsid", "setpgid", "capset", "chdir", "ptrace", "kill", "tkill", "tgkill", "mount", "umount",
    "umount2", "unshare", "bpf", "init_module", "finit_module", "delete_module", "symlink", "symlinkat", "link",
    "linkat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "chmod",
    "fchmodat", "chown", "lchown", "fchownat", "memfd_create", "pipe", "pipe2", "prctl", "userfaultfd",
})
#: Fields besides `fd.*` that read the process's descriptor table or name a descriptor argument.
_DESCRIPTOR_FIELDS = frozenset({
    "proc.stdin.type", "proc.stdout.type", "proc.stderr.type", "proc.stdin.name", "proc.stdout.name",
    "proc.stderr.name", "proc.fdopencount", "proc.fdusage", "evt.args", "evt.arg",
})
_FILE_FD_TYPES = ValueSet(frozenset({"file", "directory"}), False)
_FILE_FD_CHARS = ValueSet(frozenset({"f", "d"}), False)


@dataclass(frozen=True, slots=True)
class _Candidate:
    name: str
    condition: Expr
    fields: frozenset[str]
    #: The event types it can match.
    types: ValueSet


_NOTHING = StringBound(frozenset(), frozenset())
_PATH_FIELD = "fd.name"


def _type_impossible(syscall: str, name: str, arg: str | None, op: str, values: tuple[str, ...]) -> bool:
    """True when the check is an `evt.type` comparison no `syscall` event passes (a branch of another type)."""
    if name != "evt.type" or arg is not None:
        return False
    if op in ("=", "==", "in"):
        return syscall not in values
    return op == "!=" and values == (syscall,)


@dataclass(frozen=True, slots=True)
class _PathFields:
    """The opened path as checks bound it (the path field and its parts), and the fields whose components are
    the path's first ones (the path and its directory), for `pmatch`."""

    bound: GuardField
    leading: frozenset[str]

    @staticmethod
    def of(parts: tuple[PathParts, ...]) -> _PathFields:
        leading = frozenset({_PATH_FIELD} | {p.directory for p in parts if p.path == _PATH_FIELD and p.directory})
        return _PathFields(guard_field(_PATH_FIELD, parts), leading)


def _path_atom(syscall: str | None, path: _PathFields) -> AtomBound:
    """Bounds of the path from checks; with a `syscall`, a branch of another event type bounds nothing."""
    def atom(name: str, arg: str | None, op: str, values: tuple[str, ...]) -> StringBound | None:
        if syscall is not None and _type_impossible(syscall, name, arg, op, values):
            return _NOTHING
        if op == "pmatch":
            return _pmatch_bound(values) if arg is None and name in path.leading else None
        return path.bound.bound(name, arg, op, values)
    return atom


def _pmatch_bound(values: tuple[str, ...]) -> StringBound:
    """`pmatch` on the path or its directory: the path's components start with an entry's, so (the kernel keeps
    only plain absolute paths) the path starts with the entry's literal components up to its first glob."""
    heads = set()
    for entry in values:
        literal: list[str] = []
        for part in (p for p in entry.split("/") if p):
            if any(ch in part for ch in GLOB_SPECIALS):
                break
            literal.append(part)
        heads.add("/" + "/".join(literal))
    return StringBound(frozenset(), frozenset(heads))


#: The fact "the raw path is not plain": opens with such paths always leave the kernel.
_NOT_PLAIN = "NOT_PLAIN"
#: What a check no event of the syscall passes needs: everything (it is never true).
_ANY_FACT = frozenset({*(fact.name for fact in OpenFact if fact.name), _NOT_PLAIN})


def _fact_atom(syscall: str) -> AtomFacts:
    def atom(name: str, arg: str | None, op: str, values: tuple[str, ...]) -> frozenset[str]:
        return _ANY_FACT if _type_impossible(syscall, name, arg, op, values) else _open_facts(name, arg, op, values)
    return atom


def _open_facts(name: str, arg: str | None, op: str, values: tuple[str, ...]) -> frozenset[str]:
    if arg is not None or len(values) != 1:
        return frozenset()
    if name == "fd.nameraw" and op == "contains" and any(part in values[0] for part in PLAIN_BREAKERS):
        return frozenset({_NOT_PLAIN})
    fact = _FACT_FIELDS.get(name)
    if fact is not None and op in ("=", "==") and values[0].lower() == "true":
        return frozenset({fact})
    if name in _RESULT_FIELDS and values[0].lstrip("-").isdigit():
        bound = int(values[0])
        if (op == ">=" and bound >= 0) or (op == ">" and bound >= -1):
            return frozenset({"SUCCEEDS"})
    return frozenset()


def _candidates(engine: Engine) -> list[_Candidate]:
    ruleset = engine.ruleset(SYSCALL)
    found = [_Candidate(rule.name, rule.condition, field_names(rule.condition, rule.output),
                        possible_values(rule.condition, "evt.type"))
             for rule in (ruleset.rules if ruleset is not None else [])]
    found += [_Candidate(step.name, step.condition, field_names(step.condition),
                         possible_values(step.condition, "evt.type"))
              for correlation in engine.correlations if correlation.enabled
              for step in correlation.steps if step.source == SYSCALL]
    return found


def _reads_kept_descriptors(candidate: _Candidate) -> bool:
    """True when the candidate may read, on an event other than an open, the state of a descriptor that a kept
    open made (which user space then does not know)."""
    if not any(name.startswith("fd.") or name in _DESCRIPTOR_FIELDS or name.startswith("evt.arg.")
               for name in candidate.fields):
        return False
    types = candidate.types
    if not types.cofinite and types.values <= OPEN_TYPES | _NO_FILE_FD_TYPES:
        return False
    fd_types = possible_values(candidate.condition, "fd.type")
    fd_chars = possible_values(candidate.condition, "fd.typechar")
    return not (fd_types.intersection(_FILE_FD_TYPES) == NONE or fd_chars.intersection(_FILE_FD_CHARS) == NONE)


def _need(condition: Expr, syscall: str, path: _PathFields) -> OpenNeed | None:
    """What `condition` needs of a `syscall` open; None when only opens that always leave the kernel (or none)
    can match it."""
    needed = necessary_facts(condition, _fact_atom(syscall))
    if _NOT_PLAIN in needed:
        return None
    facts = OpenFact.NOTHING
    for name in needed:
        facts |= OpenFact[name]
    bound = string_bound(condition, _path_atom(syscall, path))
    if bound is None:
        return OpenNeed(facts=facts, any_path=True)
    return OpenNeed(facts=facts, exact=bound.exact, prefixes=bound.prefixes, suffixes=bound.suffixes)


def prefilter_plan(engine: Engine) -> PrefilterPlan:
    """What the engine's syscall rules and correlation steps need of each open syscall, and the paths they name
    (whose files are then watched by inode)."""
    candidates = _candidates(engine)
    # The path and the fields that are parts of it, as the source declares them (fd.directory, fd.filename).
    path = _PathFields.of(engine.sources[SYSCALL].guard_paths)
    needs: dict[str, tuple[OpenNeed, ...] | None] = {}
    reasons: dict[str, str] = {}
    named: set[str] = set()
    named_prefixes: set[str] = set()
    for syscall in sorted(OPEN_TYPES):
        found = [(candidate.name, need) for candidate in candidates if candidate.types.admits(syscall)
                 for need in [_need(candidate.condition, syscall, path)] if need is not None]
        for _name, need in found:
            named |= need.exact
            named_prefixes |= need.prefixes
        matching_any = next((name for name, need in found if need.any_path and not need.facts), None)
        if matching_any is None:
            needs[syscall] = tuple(need for _name, need in found)
        else:
            needs[syscall], reasons[syscall] = None, f"'{matching_any}' may match any {syscall}"
    for candidate in candidates:
        # On any event type: a rule on reads of /etc/shadow sees the name its open got.
        bound = string_bound(candidate.condition, _path_atom(None, path))
        if bound is not None:
            named |= bound.exact
            named_prefixes |= bound.prefixes
    plan = PrefilterPlan(needs, reasons, frozenset(named), frozenset(named_prefixes))
    blocker = next((c.name for c in candidates if _reads_kept_descriptors(c)), None)
    if blocker is not None:
        return plan.keeping_none(f"'{blocker}' reads descriptors on events other than opens")
    return plan


class PlanCache:
    """The plan of the engine now loaded, derived once per engine (a reload builds a new engine)."""

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._plans: tuple[PrefilterPlan, PrefilterPlan] | None = None

    def plan(self, engine: Engine, *, keeping: bool = True) -> PrefilterPlan:
        """The engine's plan; not `keeping`, the same with every open leaving the kernel (the config turned
        the prefilter off), its named files still watched."""
        if engine is not self._engine or self._plans is None:
            plan = prefilter_plan(engine)
            self._engine, self._plans = engine, (plan, plan.keeping_none("the config turns kernel.prefilter off"))
        return self._plans[0 if keeping else 1]

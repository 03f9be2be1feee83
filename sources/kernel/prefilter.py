"""The kernel prefilter: which opens some loaded rule might match, as data the BPF program looks up.

The agent derives a `PrefilterPlan` from the loaded rules: per open syscall, what each candidate rule needs of an
open to possibly match (`OpenNeed`: facts such as "it reads", and the absolute paths it can be about, exact or by
prefix), or None when some rule might match any open. `encode` turns the plan into the probe's map contents:

* terms: one bit per (syscall, facts) pair;
* a longest-prefix-match trie from path (an exact path ends with its NUL) to the bits of the terms whose paths
  admit it; since a trie lookup returns only the longest match, each entry also carries the bits of every shorter
  entry that is a prefix of it; a second trie holds suffixes, reversed, and is looked up with the reversed path;
* per syscall: on/off, the bits of the terms that admit any path, and the bits of its own terms;
* per combination of the open's facts: the bits of the terms whose facts it has.

An open stays in the kernel when its path is absolute and plain (no `//`, `/.`, `./`: `PLAIN_BREAKERS`, and
no trailing slash), fits
the trie key, has no O_PATH or O_DIRECTORY, and (trie bits | any-path bits) & own bits & fact bits is empty.
Everything else leaves the kernel: the filter is an over-approximation, it never keeps what a rule might match.
Updating the maps applies a rules reload without recompiling the program.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import IntFlag

from sources.kernel.state.fd_events import OPEN_TYPES

#: Bytes of path the trie key holds (with the NUL): a longer path always leaves the kernel.
PATH_KEY = 256
#: Prefixes whose opens always leave the kernel: user space names `/proc/self/fd/N` and `/dev/fd/N` after the
#: descriptor they reopen, which a rule on the real path must see.
ALWAYS_PASSED = ("/proc/", "/dev/fd/")
#: Substrings that make a path leave the kernel whatever the rules: user space folds them, and a rule that looks
#: for them in the raw path (`fd.nameraw contains "../"`) needs no term of its own.
PLAIN_BREAKERS = ("//", "/.", "./")
MAX_TERMS = 64
ALL_TERMS = (1 << MAX_TERMS) - 1


class OpenFact(IntFlag):
    """What the kernel knows of an open at its exit, as the bits of the fact combination it looks up."""

    NOTHING = 0
    READS = 1      # access mode read-only or read-write
    WRITES = 2     # access mode write-only or read-write
    CREATES = 4    # O_CREAT or O_TMPFILE
    SUCCEEDS = 8   # the result is a descriptor


FACT_COMBINATIONS = 16


@dataclass(frozen=True, slots=True)
class OpenNeed:
    """What one rule needs of an open to possibly match: all of `facts`, and (unless `any_path`) a path among
    `exact`, starting with one of `prefixes` or ending with one of `suffixes`."""

    facts: OpenFact = OpenFact.NOTHING
    exact: frozenset[str] = frozenset()
    prefixes: frozenset[str] = frozenset()
    suffixes: frozenset[str] = frozenset()
    any_path: bool = False


@dataclass(frozen=True, slots=True)
class PrefilterPlan:
    """Per open syscall: the needs of its candidate rules, or None when every open must leave the kernel (then
    `reasons` says which rule decided)."""

    needs: Mapping[str, tuple[OpenNeed, ...] | None]
    reasons: Mapping[str, str] = field(default_factory=dict)
    #: The absolute paths and path prefixes the rules' opens are about, whether or not any open stays in the
    #: kernel: the files there are watched by device and inode (watched_files.py), whatever link opens them.
    named: frozenset[str] = frozenset()
    named_prefixes: frozenset[str] = frozenset()

    @staticmethod
    def passing_all(reason: str) -> PrefilterPlan:
        return PrefilterPlan({name: None for name in OPEN_TYPES}, {name: reason for name in OPEN_TYPES})

    def keeping_none(self, reason: str) -> PrefilterPlan:
        """This plan with every open leaving the kernel (`reason` says why), its named files still watched."""
        return replace(PrefilterPlan.passing_all(reason), named=self.named, named_prefixes=self.named_prefixes)


@dataclass(frozen=True, slots=True)
class EncodedFilter:
    """The maps' contents: the trie entries (key bytes, term bits) of paths and of reversed suffixes, per syscall
    (enabled, any-path bits, own bits), and the term bits per fact combination."""

    paths: tuple[tuple[bytes, int], ...]
    suffixes: tuple[tuple[bytes, int], ...]
    per_syscall: Mapping[str, tuple[bool, int, int]]
    fact_bits: tuple[int, ...]


def _key(path: str, *, exact: bool) -> bytes | None:
    raw = path.encode("utf-8", "surrogateescape") + (b"\0" if exact else b"")
    if exact:
        return raw if len(raw) < PATH_KEY else None  # a path filling the key never reaches the trie: it leaves
    return raw[:PATH_KEY]  # a shorter prefix admits more: still sound


def _folded(entries: dict[bytes, int]) -> tuple[tuple[bytes, int], ...]:
    """Each key with its bits and those of every shorter key it extends: a trie lookup returns only the longest."""
    ordered = sorted(entries)
    return tuple((key, entries[key] | _bits_of_prefixes(key, ordered, entries)) for key in ordered)


def _bits_of_prefixes(key: bytes, ordered: list[bytes], entries: dict[bytes, int]) -> int:
    bits = 0
    for other in ordered:
        if other != key and key.startswith(other):
            bits |= entries[other]
    return bits


def encode(plan: PrefilterPlan) -> EncodedFilter:
    """The maps for `plan`; a syscall whose terms do not fit MAX_TERMS bits is left unfiltered."""
    terms: dict[tuple[str, OpenFact], int] = {}
    entries: dict[bytes, int] = {}
    suffixes: dict[bytes, int] = {}
    per_syscall: dict[str, tuple[bool, int, int]] = {}
    for name in sorted(plan.needs):
        needs = plan.needs[name]
        if needs is None or len(terms) + len({n.facts for n in needs}) > MAX_TERMS:
            per_syscall[name] = (False, 0, 0)
            continue
        own = any_path = 0
        for need in needs:
            bit = 1 << terms.setdefault((name, need.facts), len(terms))
            own |= bit
            if need.any_path:
                any_path |= bit
                continue
            keys = [_key(p, exact=True) for p in need.exact] + [_key(p, exact=False) for p in need.prefixes]
            for key in keys:
                if key is not None:
                    entries[key] = entries.get(key, 0) | bit
            for suffix in need.suffixes:
                raw = suffix.encode("utf-8", "surrogateescape")[::-1]
                if len(raw) < PATH_KEY:  # a longer suffix only ends paths that leave the kernel anyway
                    suffixes[raw] = suffixes.get(raw, 0) | bit
        per_syscall[name] = (True, any_path, own)
    for prefix in ALWAYS_PASSED:
        entries[prefix.encode()] = ALL_TERMS
    fact_bits = tuple(
        sum(1 << bit for (_name, facts), bit in terms.items() if facts & combination == facts)
        for combination in range(FACT_COMBINATIONS))
    return EncodedFilter(paths=_folded(entries), suffixes=_folded(suffixes), per_syscall=per_syscall,
                         fact_bits=fact_bits)


def filtered_syscalls(encoded: EncodedFilter) -> frozenset[str]:
    """The open syscalls the encoded filter keeps in the kernel some of."""
    return frozenset(name for name, (enabled, _any, _own) in encoded.per_syscall.items() if enabled)

"""Comparison operators: constant conversion per field kind and the predicates built at compile time.

A predicate built here takes a value that is known to be present (not None); the compiler
adds the "missing means false" guard around it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

Pred = Callable[[Any], bool]

NUM_OPS = frozenset({"<", "<=", ">", ">="})
LIST_OPS = frozenset({"in", "intersects", "pmatch"})
MODIFIABLE_OPS = frozenset({
    "=", "==", "!=", "contains", "icontains", "bcontains", "startswith", "bstartswith", "endswith", "glob",
    "iglob", "regex",
})
_ALLOWED = {
    "number": frozenset({"=", "==", "!=", "<", "<=", ">", ">=", "in", "intersects", "exists"}),
    "bool": frozenset({"=", "==", "!=", "in", "intersects", "exists"}),
    "string": frozenset({
        "=", "==", "!=", "<", "<=", ">", ">=", "contains", "icontains", "startswith", "endswith", "glob",
        "iglob", "regex", "in", "intersects", "pmatch", "exists",
    }),
    "bytes": frozenset({
        "=", "==", "!=", "contains", "startswith", "endswith", "bcontains", "bstartswith", "in", "intersects",
        "exists",
    }),
    "ipaddr": frozenset({"=", "==", "!=", "in", "intersects", "exists"}),
    "ipnet": frozenset({"=", "==", "!=", "in", "intersects", "exists"}),
}
_ALLOWED["dyn"] = _ALLOWED["string"] | _ALLOWED["number"]
LIST_FIELD_OPS = frozenset({"in", "intersects", "exists"})


class OperatorError(ValueError):
    """An operator or constant that does not fit the field; a compile error for the user."""


def check_operator(op: str, kind: str, *, is_list: bool, modifier: str | None) -> None:
    if is_list and op not in LIST_FIELD_OPS:
        raise OperatorError(f"operator '{op}' cannot be used on a list-valued field (use in, intersects, exists)")
    if op not in _ALLOWED[kind]:
        raise OperatorError(f"operator '{op}' is not supported on a field of type {kind}")
    if modifier is not None:
        if is_list:
            raise OperatorError(f"modifier '{modifier}' needs a single-valued field")
        if kind in ("ipaddr", "ipnet") and op not in ("=", "==", "!="):
            raise OperatorError(f"modifier '{modifier}' works only with = and != on IP fields")


def convert(text: str, kind: str, op: str) -> Any:
    """Turn a constant's text into a value comparable with a field of `kind`."""
    if op in ("bcontains", "bstartswith"):
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise OperatorError(f"'{text}' is not a hex string") from None
    if kind == "number":
        try:
            if text.lower().startswith(("0x", "+0x", "-0x")):
                return int(text, 16)
            return int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else float(text)
        except ValueError:
            raise OperatorError(f"'{text}' is not a valid number") from None
    if kind == "bool":
        if text in ("true", "false"):
            return text == "true"
        raise OperatorError(f"'{text}' is not a boolean (true or false)")
    if kind == "bytes":
        return text.encode()
    if kind in ("ipaddr", "ipnet"):
        try:
            if "/" in text or kind == "ipnet":
                return ipaddress.ip_network(text, strict=False)
            return ipaddress.ip_address(text)
        except ValueError:
            raise OperatorError(f"'{text}' is not a valid IP address or network") from None
    if kind == "dyn":
        return int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else text
    return text


def glob_regex(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """Shell-style whole-string match where `*` also crosses `/` and backslash escapes a character."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _ip_in(value: Any, target: Any) -> bool:
    if isinstance(target, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value.version == target.version and value in target
    return bool(value == target)


def scalar_pred(op: str, const: Any) -> Pred:
    """A predicate comparing a present single value with a constant."""
    if op in ("=", "=="):
        if isinstance(const, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            return lambda v: _ip_in(v, const)
        return lambda v: v == const
    if op == "!=":
        if isinstance(const, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            return lambda v: not _ip_in(v, const)
        return lambda v: v != const
    if op == "<":
        return lambda v: v < const
    if op == "<=":
        return lambda v: v <= const
    if op == ">":
        return lambda v: v > const
    if op == ">=":
        return lambda v: v >= const
    if op in ("contains", "bcontains"):
        return lambda v: const in v
    if op == "icontains":
        low = const.lower()
        return lambda v: low in v.lower()
    if op in ("startswith", "bstartswith"):
        return lambda v: v.startswith(const)
    if op == "endswith":
        return lambda v: v.endswith(const)
    if op in ("glob", "iglob"):
        match = glob_regex(const, ignore_case=op == "iglob").fullmatch
        return lambda v: match(v) is not None
    if op == "regex":
        try:
            regex = re.compile(const)
        except re.error as exc:
            raise OperatorError(f"invalid regular expression '{const}': {exc}") from None
        return lambda v: regex.fullmatch(v) is not None
    raise OperatorError(f"unknown operator '{op}'")


def modifier_pred(op: str, modifier: str, consts: list[Any]) -> Pred:
    """`op anyof|allof|oneof (c1, ...)`: how many constants must satisfy `op`."""
    preds = tuple(scalar_pred(op, c) for c in consts)
    if not preds:
        return lambda _v: False
    if modifier == "anyof":
        return lambda v: any(p(v) for p in preds)
    if modifier == "allof":
        return lambda v: all(p(v) for p in preds)
    return lambda v: sum(1 for p in preds if p(v)) == 1


def set_pred(op: str, consts: list[Any], *, is_list: bool) -> Pred:
    """`in`, `intersects` and `pmatch` against a constant set."""
    if op == "pmatch":
        return pmatch_pred([str(c) for c in consts])
    if any(isinstance(c, (ipaddress.IPv4Network, ipaddress.IPv6Network)) for c in consts):
        def ip_any(v: Any) -> bool:
            return any(_ip_in(v, c) for c in consts)
        if is_list and op == "in":
            return lambda vs: all(ip_any(v) for v in vs)
        if is_list:
            return lambda vs: any(ip_any(v) for v in vs)
        return ip_any
    members = frozenset(consts)
    if is_list:
        if op == "in":
            return members.issuperset
        return lambda vs: not members.isdisjoint(vs)
    return members.__contains__


def pmatch_pred(entries: list[str]) -> Pred:
    """Path-prefix match on whole components; entry components with `* ? [` are globbed."""
    exact: set[tuple[str, ...]] = set()
    globbed: list[tuple[re.Pattern[str], ...]] = []
    for entry in entries:
        parts = tuple(p for p in entry.split("/") if p)
        if any(ch in entry for ch in "*?["):
            globbed.append(tuple(glob_regex(p) for p in parts))
        else:
            exact.add(parts)

    def match(value: str) -> bool:
        parts = [p for p in value.split("/") if p]
        for k in range(len(parts) + 1):
            if tuple(parts[:k]) in exact:
                return True
        for pattern in globbed:
            if len(pattern) <= len(parts) and all(g.fullmatch(p) for g, p in zip(pattern, parts, strict=False)):
                return True
        return False

    return match


def dynamic_pred(op: str, modifier: str | None) -> Callable[[Any, Any], bool]:
    """Compare two present values at run time (right-hand side from `val()` or a transformer)."""
    if op in LIST_OPS:
        def in_values(a: Any, b: Any) -> bool:
            pool = b if isinstance(b, tuple) else (b,)
            if op == "pmatch":
                return pmatch_pred([str(x) for x in pool])(a)
            if isinstance(a, tuple):
                return all(x in pool for x in a) if op == "in" else any(x in pool for x in a)
            return a in pool
        return in_values

    def compare(a: Any, b: Any) -> bool:
        if modifier is not None:
            return modifier_pred(op, modifier, list(b if isinstance(b, tuple) else (b,)))(a)
        try:
            return scalar_pred(op, b)(a)
        except TypeError:
            return False

    return compare

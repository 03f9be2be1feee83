"""Transformers (`tolower`, `b64`, `len`, `join`, `getopt`...) as value functions built at compile time."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.event import Event

Getter = Callable[[Event], Any]


@dataclass(frozen=True, slots=True)
class Typed:
    """A compiled value source: how to get it from an event, its kind, and whether it is a list.

    `key` is the per-event cache key when the value is a plain field: `get` then caches by
    itself, and `extract` is the same extraction without the cache.
    """

    get: Getter
    kind: str
    is_list: bool
    key: str | None = None
    extract: Getter | None = None


class TransformerError(ValueError):
    """A transformer applied to arguments it cannot take; a compile error."""


def _map_each(fn: Callable[[Any], Any], arg: Typed) -> Getter:
    get = arg.get
    if arg.is_list:
        def each(ev: Event) -> Any:
            values = get(ev)
            if values is None:
                return None
            out = tuple(r for r in (fn(v) for v in values) if r is not None)
            return out or None
        return each

    def one(ev: Event) -> Any:
        value = get(ev)
        return None if value is None else fn(value)

    return one


def _b64(value: Any) -> Any:
    raw = value.encode() if isinstance(value, str) else value
    try:
        decoded = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if isinstance(value, str):
        return decoded.decode("utf-8", errors="replace")
    return decoded


def _basename(value: str) -> str:
    return value.rsplit("/", 1)[-1]


def _single(name: str, args: list[Typed], kinds: tuple[str, ...]) -> Typed:
    if len(args) != 1:
        raise TransformerError(f"{name}() takes exactly one argument")
    if args[0].kind not in kinds:
        raise TransformerError(f"{name}() does not accept a {args[0].kind} value")
    return args[0]


def build_transformer(name: str, args: list[Typed], index_arg: str | None) -> Typed:
    """Compile one transformer call over already compiled arguments."""
    if name in ("tolower", "toupper"):
        arg = _single(name, args, ("string", "dyn"))
        fn = str.lower if name == "tolower" else str.upper
        return Typed(_map_each(fn, arg), "string", arg.is_list)
    if name == "b64":
        arg = _single(name, args, ("string", "bytes", "dyn"))
        return Typed(_map_each(_b64, arg), arg.kind, arg.is_list)
    if name == "basename":
        arg = _single(name, args, ("string", "dyn"))
        return Typed(_map_each(_basename, arg), "string", arg.is_list)
    if name == "len":
        arg = _single(name, args, ("string", "bytes", "dyn", "number", "bool", "ipaddr", "ipnet"))
        if not arg.is_list and arg.kind not in ("string", "bytes", "dyn"):
            raise TransformerError("len() needs a string, a byte buffer or a list")
        get = arg.get
        return Typed(lambda ev: None if (v := get(ev)) is None else len(v), "number", False)
    if name == "join":
        return _join(args)
    if name == "concat":
        return _concat(args)
    if name == "getopt":
        return _getopt(args, index_arg)
    raise TransformerError(f"unknown transformer '{name}'")


def _join(args: list[Typed]) -> Typed:
    if len(args) != 2 or args[0].is_list:
        raise TransformerError("join() takes a separator and a list")
    sep_get, list_get = args[0].get, args[1].get
    is_list = args[1].is_list

    def join(ev: Event) -> Any:
        sep = sep_get(ev)
        values = list_get(ev)
        if sep is None or values is None:
            return None
        items = values if is_list else (values,)
        return str(sep).join(str(v) for v in items)

    return Typed(join, "string", False)


def _concat(args: list[Typed]) -> Typed:
    if len(args) < 2 or any(a.is_list for a in args):
        raise TransformerError("concat() takes two or more single values")
    getters = tuple(a.get for a in args)

    def concat(ev: Event) -> Any:
        parts = []
        for get in getters:
            value = get(ev)
            if value is None:
                return None
            parts.append(str(value))
        return "".join(parts)

    return Typed(concat, "string", False)


def _getopt(args: list[Typed], index_arg: str | None) -> Typed:
    if len(args) != 2 or args[1].is_list:
        raise TransformerError('getopt() takes a list of arguments and an option string such as "n:v"')
    argv_get, opts_get = args[0].get, args[1].get
    as_list = args[0].is_list

    def parsed(ev: Event) -> list[tuple[str, str | None]] | None:
        argv, opts = argv_get(ev), opts_get(ev)
        if argv is None or opts is None:
            return None
        return scan_options(list(argv) if as_list else [argv], str(opts))

    if index_arg is None:
        def options(ev: Event) -> Any:
            found = parsed(ev)
            if not found:
                return None
            return tuple(flag + (value or "") for flag, value in found)
        return Typed(options, "string", True)

    def option_value(ev: Event) -> Any:
        found = parsed(ev)
        if not found:
            return None
        result = None
        for flag, value in found:
            if flag == index_arg:
                result = flag if value is None else value
        return result

    return Typed(option_value, "string", False)


def scan_options(argv: list[str], optstring: str) -> list[tuple[str, str | None]]:
    """getopt(3)-style scan: (letter, argument) pairs; unknown letters come back as ('?', None).

    A flag without argument has None; an option whose argument is missing has "".
    """
    takes_arg = {}
    for i, ch in enumerate(optstring):
        if ch != ":":
            takes_arg[ch] = optstring[i + 1 : i + 2] == ":"
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        token = str(argv[i])
        if token == "--" or not token.startswith("-") or token == "-":
            break
        i += 1
        if token.startswith("--"):
            continue
        j = 1
        while j < len(token):
            letter = token[j]
            if letter not in takes_arg:
                out.append(("?", None))
                j += 1
                continue
            if not takes_arg[letter]:
                out.append((letter, None))
                j += 1
                continue
            rest = token[j + 1 :]
            if rest:
                out.append((letter, rest))
            elif i < len(argv):
                out.append((letter, str(argv[i])))
                i += 1
            else:
                out.append((letter, ""))
            break
    return out

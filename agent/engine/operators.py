"""Comparison operators: constant conversion per field kind and the predicates built at compile time.

A predicate built here takes a value that is known to be present (not None); the compiler
adds the "missing means false" guard around it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import string
from collections.abc import Callable
from typing import Any

import re2

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


# ----- glob and iglob: glibc's fnmatch(3), as libsinsp calls it -----------------------------------
# libsinsp evaluates `glob`/`iglob` as fnmatch(pattern, value, 0 or FNM_CASEFOLD) (sinsp_utils::glob_match):
# without FNM_PATHNAME or FNM_PERIOD, `*`, `?` and brackets also match `/` and a leading `.`, and a backslash
# escapes the next character. Falco sets no locale, so glibc works in the C locale: on bytes (`?` is one
# byte of a UTF-8 character) with ASCII-only case folding and character classes. The pattern is parsed
# here once, the way glibc's fnmatch_loop.c walks it, into the set of bytes each position accepts.

_NUL, _BANG, _CARET, _STAR, _QUESTION, _BACKSLASH = 0, ord("!"), ord("^"), ord("*"), ord("?"), ord("\\")
_LBRACKET, _RBRACKET, _DASH, _COLON, _EQUALS, _DOT = ord("["), ord("]"), ord("-"), ord(":"), ord("="), ord(".")
_CLASS_FIRST, _CLASS_END = ord("a"), ord("z")  # glibc takes [a-y] as class-name characters
_CLASS_NAME_MAX = 2048  # glibc's CHARCLASS_NAME_MAX: a longer `[:name:]` fails the match
_ALL_BYTES = frozenset(range(256))
_NO_BYTES: frozenset[int] = frozenset()
_CLASSES = {name.encode(): frozenset(chars.encode()) for name, chars in {
    "alnum": string.ascii_letters + string.digits, "alpha": string.ascii_letters, "blank": " \t",
    "cntrl": "".join(map(chr, [*range(32), 127])), "digit": string.digits,
    "graph": string.ascii_letters + string.digits + string.punctuation, "lower": string.ascii_lowercase,
    "print": " " + string.ascii_letters + string.digits + string.punctuation, "punct": string.punctuation,
    "space": " \t\n\r\x0b\x0c", "upper": string.ascii_uppercase, "xdigit": string.hexdigits,
}.items()}
# How a bracket expression ends when glibc finds no `]` for it: at the end of the pattern, or by giving up.
_UNTERMINATED, _FAILED = -1, -2

#: A member of a bracket expression: the bytes it matches, where glibc resumes after matching one of
#: them, and where the next member starts (None where glibc returns FNM_NOMATCH for every other byte).
_Member = tuple[frozenset[int], int, int | None]


class _GlobParser:
    """One pattern, parsed the way glibc's fnmatch reads it; bracket scans are memoised by position.

    glibc rescans a bracket expression from its start for each byte it is tried on; the scans' course
    depends on the pattern only, so each member is read once here and the sets of bytes it matches
    combined. That keeps parsing linear even for a pattern full of unterminated `[`.
    """

    def __init__(self, pattern: bytes, *, ignore_case: bool) -> None:
        # fnmatch reads a C string; the padding lets the scans look past its end as glibc's do.
        self.pat = pattern.split(b"\0", 1)[0] + b"\0\0\0"
        self.ignore_case = ignore_case
        self._members: dict[int, _Member] = {}
        self._chains: dict[int, tuple[frozenset[int], int, int | None]] = {}
        self._skips: dict[int, int] = {}

    def tokens(self) -> list[frozenset[int] | None] | None:
        """The accepted bytes of each position, None for a `*`; None overall when no value can match."""
        pat = self.pat
        out: list[frozenset[int] | None] = []
        i = 0
        while pat[i] != _NUL:
            c = pat[i]
            i += 1
            if c == _STAR:
                if not out or out[-1] is not None:
                    out.append(None)
                continue
            if c == _QUESTION:
                accepts = _ALL_BYTES
            elif c == _BACKSLASH:
                if pat[i] == _NUL:
                    return None  # glibc: "Trailing \ loses."
                accepts = self._same(self._fold(pat[i]))
                i += 1
            elif c == _LBRACKET:
                accepts, i = self._bracket(i)
            else:
                accepts = self._same(self._fold(c))
            if not accepts:
                return None
            out.append(accepts)
        return out

    def _fold(self, c: int) -> int:
        return c + 32 if self.ignore_case and 65 <= c <= 90 else c

    def _same(self, folded: int) -> frozenset[int]:
        """The bytes that fold to `folded`."""
        if self.ignore_case and 97 <= folded <= 122:
            return frozenset((folded, folded - 32))
        return frozenset((folded,))

    def _bracket(self, start: int) -> tuple[frozenset[int], int]:
        """The bytes a `[` just before `start` accepts, and where the pattern goes on after it."""
        pat = self.pat
        # glibc also negates with `^` unless POSIXLY_CORRECT is set, which Falco's environment does not do.
        negate = pat[start] in (_BANG, _CARET)
        first = start + 1 if negate else start
        union, outcome, lbracket_at = self._chain(first)
        # When glibc runs off the pattern looking for the `]` (scanning, or skipping the rest after `[`
        # matched a member), it takes the `[` as an ordinary character and goes on right after it.
        literal = (lbracket_at is None and outcome == _UNTERMINATED) or (
            lbracket_at is not None and self._skip(lbracket_at) == _UNTERMINATED)
        if outcome == _UNTERMINATED or (outcome == _FAILED and literal):
            return (frozenset((_LBRACKET,)) if literal else _NO_BYTES), start
        if negate:
            return (_ALL_BYTES - union if outcome >= 0 else _NO_BYTES), max(outcome, start)
        # A byte is decided by the first member that matches it, then glibc skips to the `]`.
        ends: dict[int, set[int]] = {}  # where the pattern goes on -> the bytes that take it there
        seen: set[int] = set()
        q = first
        while True:  # the first member is read even when it is `]`
            accepts, matched_at, nxt = self._member(q)
            new = accepts - seen
            seen |= new
            end = self._skip(matched_at) if new else _FAILED
            if end >= 0:
                ends.setdefault(end, set()).update(new)
            if nxt is None or pat[nxt] == _RBRACKET:
                break
            q = nxt
        # After a malformed `[=`, `[:` or `[.` inside a bracket, glibc's skip past a matched byte can end at
        # another `]` than its scan, and the pattern would go on from two places: the scan's end is kept and
        # such bytes are left out (a bracket glibc gives up on has only the skips' ends).
        at = outcome if outcome >= 0 else min(ends, default=start)
        return frozenset(ends.get(at, ())), at

    def _chain(self, q: int) -> tuple[frozenset[int], int, int | None]:
        """For the members from `q` on: every byte they match, where the bracket ends (or how it fails to),
        and where glibc resumes after `[` matched (None if no member matches `[`)."""
        pending: list[tuple[int, frozenset[int], int]] = []
        while q not in self._chains:
            if self.pat[q] == _NUL:
                self._chains[q] = (_NO_BYTES, _UNTERMINATED, None)
                break
            accepts, matched_at, nxt = self._member(q)
            if nxt is None or self.pat[nxt] == _RBRACKET:
                lbracket_at = matched_at if _LBRACKET in accepts else None
                self._chains[q] = (accepts, _FAILED if nxt is None else nxt + 1, lbracket_at)
                break
            pending.append((q, accepts, matched_at))
            q = nxt
        union, outcome, lbracket_at = self._chains[q]
        for pos, accepts, matched_at in reversed(pending):
            union |= accepts
            if _LBRACKET in accepts:
                lbracket_at = matched_at
            self._chains[pos] = (union, outcome, lbracket_at)
        return union, outcome, lbracket_at

    def _member(self, q: int) -> _Member:
        member = self._members.get(q)
        if member is None:
            member = self._members[q] = self._read_member(q)
        return member

    def _read_member(self, q: int) -> _Member:
        """One turn of glibc's bracket loop, on the member starting at `q`."""
        pat = self.pat
        c, p = pat[q], q + 1
        if c == _BACKSLASH:
            if pat[p] == _NUL:
                return _NO_BYTES, p, None
            return self._single(self._fold(pat[p]), p + 1)
        if c == _LBRACKET and pat[p] == _COLON:
            r = p
            while True:
                if r - p == _CLASS_NAME_MAX:
                    return _NO_BYTES, r, None
                r += 1
                if pat[r] == _COLON and pat[r + 1] == _RBRACKET:
                    break
                if not _CLASS_FIRST <= pat[r] < _CLASS_END:
                    return self._single(_LBRACKET, p)  # not a class name: `[` is a plain member
            members = _CLASSES.get(pat[p + 1 : r])
            if members is None:
                return _NO_BYTES, r, None
            return members, r + 2, r + 2  # classes test the byte unfolded, and start no range
        if c == _LBRACKET and pat[p] == _EQUALS:
            if pat[p + 1] == _NUL or pat[p + 2] != _EQUALS or pat[p + 3] != _RBRACKET:
                return self._single(_LBRACKET, p)
            return frozenset((pat[p + 1],)), p + 4, p + 4
        if c == _LBRACKET and pat[p] == _DOT:
            close = self._symbol_end(p)
            if close is None or close != p + 2:  # the C locale names no multi-character symbol
                return _NO_BYTES, p, None
            after = close + 2
            # glibc's range test here omits the `]` check of _single, and the symbol is compared unfolded.
            in_range = pat[after] == _DASH and pat[after + 1] != _NUL
            return self._range(_NO_BYTES if in_range else frozenset((pat[p + 1],)), after, pat[p + 1])
        return self._single(self._fold(c), p)

    def _single(self, c: int, p: int) -> _Member:
        """glibc's `normal_bracket`: the (folded) byte `c`, or the start of a range when `-` follows."""
        in_range = self.pat[p] == _DASH and self.pat[p + 1] not in (_NUL, _RBRACKET)
        return self._range(_NO_BYTES if in_range else self._same(c), p, c)

    def _range(self, accepts: frozenset[int], p: int, low: int) -> _Member:
        """After a member's own test at `p`: a `-` not followed by `]` makes a range from `low`."""
        pat = self.pat
        if pat[p] != _DASH or pat[p + 1] == _RBRACKET:
            return accepts, p, p
        r = p + 1
        high = pat[r]
        r += 1
        if high == _LBRACKET and pat[r] == _DOT:
            close = self._symbol_end(r)
            if close is None or close != r + 2:
                return accepts, p, None
            high, r = pat[r + 1], close + 2
        else:
            if high == _BACKSLASH:
                high = pat[r]
                r += 1
            if high == _NUL:
                return accepts, p, None
            high = self._fold(high)
        # The C locale's collation order is the byte order; the byte is folded before the comparison.
        return frozenset(x for x in range(256) if low <= self._fold(x) <= high), r, r

    def _symbol_end(self, dot: int) -> int | None:
        """The `.` closing a `[.` whose `.` is at `dot`, or None when the pattern ends first."""
        r = dot
        while True:
            r += 1
            if self.pat[r] == _DOT and self.pat[r + 1] == _RBRACKET:
                return r
            if self.pat[r] == _NUL:
                return None

    def _skip(self, p: int) -> int:
        """Where glibc's skip over "the rest of the [...] that already matched" ends: after the `]`,
        _UNTERMINATED when it runs off the pattern, _FAILED when glibc returns FNM_NOMATCH."""
        visited: list[int] = []
        while p not in self._skips:
            visited.append(p)
            done, p = self._skip_step(p)
            if done:
                result = p
                break
        else:
            result = self._skips[p]
        for pos in visited:
            self._skips[pos] = result
        return result

    def _skip_step(self, p: int) -> tuple[bool, int]:
        """One turn of that skip from `p`: (True, how it ends) when it stops, else (False, next turn's start)."""
        pat = self.pat
        c = pat[p]
        p += 1
        if c == _NUL:
            return True, _UNTERMINATED
        if c == _BACKSLASH:
            if pat[p] == _NUL:
                return True, _FAILED
            p += 1
        elif c == _LBRACKET and pat[p] == _COLON:
            r = p
            while True:
                r += 1
                if r - p == _CLASS_NAME_MAX:
                    return True, _FAILED
                if pat[r] == _COLON and pat[r + 1] == _RBRACKET:
                    break
                if not _CLASS_FIRST <= pat[r] < _CLASS_END:
                    return False, p  # glibc rereads from the `:`, without testing for `]`
            # After `[:name:]`, `[=c=]` or `[.c.]` glibc tests the `:`, `=` or `.` it last read: never `]`.
            return False, r + 2
        elif c == _LBRACKET and pat[p] == _EQUALS:
            if pat[p + 1] == _NUL or pat[p + 2] != _EQUALS or pat[p + 3] != _RBRACKET:
                return True, _FAILED
            return False, p + 4
        elif c == _LBRACKET and pat[p] == _DOT:
            close = self._symbol_end(p + 1)  # glibc steps over the first character unread
            if close is None:
                return True, _FAILED
            return False, close + 2
        return (True, p) if c == _RBRACKET else (False, p)


def _char_class(accepts: frozenset[int]) -> str:
    if accepts == _ALL_BYTES:
        return "."
    runs: list[list[int]] = []
    for byte in sorted(accepts):
        if runs and runs[-1][1] == byte - 1:
            runs[-1][1] = byte
        else:
            runs.append([byte, byte])
    body = "".join(f"\\x{low:02x}" if low == high else f"\\x{low:02x}-\\x{high:02x}" for low, high in runs)
    return body if len(runs) == 1 and runs[0][0] == runs[0][1] else f"[{body}]"


# A glob compared with another field (`glob val(f)`) is built per event: the cache keeps repeated values cheap.
@functools.lru_cache(maxsize=1024)
def _glob_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """The glob as a regular expression over a value's bytes, one character per byte, linear in the value.

    Between two `*`s sits a fixed-width piece. Placing it at its leftmost fit never loses a match (a later
    fit leaves less room for the rest), so each piece is searched for once and committed in an atomic
    group: nothing backtracks into it, and a match costs O(len(value) × len(pattern)) whatever the stars.
    """
    tokens = _GlobParser(_raw(pattern), ignore_case=ignore_case).tokens()
    if tokens is None:
        return re.compile("(?!)")  # matches nothing
    pieces: list[list[frozenset[int]]] = [[]]
    for token in tokens:
        if token is None:
            pieces.append([])
        else:
            pieces[-1].append(token)
    text = ["".join(_char_class(accepts) for accepts in piece) for piece in pieces]
    if len(text) > 1:
        middle = "".join(f"(?>.*?{piece})" for piece in text[1:-1] if piece)
        text = [text[0] + middle + ".*" + text[-1]]
    return re.compile(text[0], re.DOTALL)


def glob_matcher(pattern: str, *, ignore_case: bool = False) -> Pred:
    """fnmatch(3) in the C locale, flags 0 (or FNM_CASEFOLD), in time linear in the value."""
    fullmatch = _glob_regex(pattern, ignore_case).fullmatch
    # ASCII text is its own bytes; only other values need spelling out byte by byte.
    return lambda v: fullmatch(v if str.isascii(v) else _byte_text(v)) is not None


def _raw(value: str) -> bytes:
    """The bytes Falco would see: the sources decode invalid UTF-8 with surrogateescape, which this undoes."""
    return value.encode("utf-8", "surrogateescape")


def _byte_text(value: str) -> str:
    """The value's bytes, one character each, as the glob regular expressions read them.

    `str.encode` raises TypeError for a value that is not text, as `dynamic_pred` expects.
    """
    return str.encode(value, "utf-8", "surrogateescape").decode("latin-1")


# ----- regex: RE2, as libsinsp runs it ------------------------------------------------------------
_RE2_OPTIONS = re2.Options()
# libsinsp compiles `regex` values with RE2::POSIX (posix_syntax + longest_match: egrep syntax, so no \d \w \b,
# (?:...), (?i), lookaround or backreferences) and matches with ANCHOR_BOTH: the whole value.
_RE2_OPTIONS.posix_syntax = True
_RE2_OPTIONS.longest_match = True
# Falco reads no submatch; without captures RE2 answers from its DFA alone. What matches is unchanged.
_RE2_OPTIONS.never_capture = True
# A bad pattern becomes a load error; RE2 need not print it on stderr as well.
_RE2_OPTIONS.log_errors = False


def regex_matcher(pattern: str) -> Pred:
    """Whole-value RE2 match; RE2 runs in time linear in the value and releases the GIL while it does."""
    try:
        fullmatch = re2.compile(pattern, _RE2_OPTIONS).fullmatch
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise OperatorError(f"invalid regex pattern '{pattern}': {reason}") from None

    def match(value: str) -> bool:
        return fullmatch(_sanitized_utf8(value)) is not None

    return match


def _sanitized_utf8(value: str) -> bytes:
    """The value as libsinsp hands it to RE2: UTF-8 with invalid bytes replaced (its utf8::sanitize)."""
    try:
        return value.encode()
    except UnicodeEncodeError:  # surrogate escapes: the source read bytes that were not UTF-8
        return _raw(value).decode(errors="replace").encode()


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
        return glob_matcher(const, ignore_case=op == "iglob")
    if op == "regex":
        return regex_matcher(const)
    raise OperatorError(f"unknown operator '{op}'")


#: An operator's check as generated code writes it: a template over `{v}` (the present value) and `{c}` (the
#: constant), and that constant. `scalar_pred` and `set_pred` build the same checks as callables.
InlineCheck = tuple[str, Any]
_INLINE_SCALAR = {
    "=": "{v} == {c}", "==": "{v} == {c}", "!=": "{v} != {c}", "<": "{v} < {c}", "<=": "{v} <= {c}",
    ">": "{v} > {c}", ">=": "{v} >= {c}", "contains": "{c} in {v}", "bcontains": "{c} in {v}",
    "icontains": "{c} in {v}.lower()", "startswith": "{v}.startswith({c})", "bstartswith": "{v}.startswith({c})",
    "endswith": "{v}.endswith({c})",
}


def scalar_inline(op: str, const: Any) -> InlineCheck | None:
    """`scalar_pred(op, const)` as an inline check, when it has one (not for IP networks, globs, regexes)."""
    template = _INLINE_SCALAR.get(op)
    if template is None or isinstance(const, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return None
    return template, const.lower() if op == "icontains" else const


def set_inline(op: str, consts: list[Any], *, is_list: bool) -> InlineCheck | None:
    """`set_pred(op, consts, is_list=is_list)` as an inline check, when it has one (not for pmatch, IP networks)."""
    if op == "pmatch" or any(isinstance(c, (ipaddress.IPv4Network, ipaddress.IPv6Network)) for c in consts):
        return None
    if not is_list:
        return "{v} in {c}", frozenset(consts)
    return ("{c}.issuperset({v})" if op == "in" else "not {c}.isdisjoint({v})"), frozenset(consts)


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


class _PathNode:
    """A node of a `pmatch` set: the entries' next components, literal ones by name, globbed ones by pattern."""

    __slots__ = ("children", "globs", "terminal")

    def __init__(self) -> None:
        self.children: dict[str, _PathNode] = {}
        self.globs: dict[str, tuple[Pred, _PathNode]] = {}
        self.terminal = False

    def child(self, part: str) -> _PathNode:
        # libsinsp globs an entry component holding any of `? * [` and compares the others as they are.
        if any(ch in part for ch in "?*["):
            glob = self.globs.get(part)
            if glob is None:
                glob = self.globs[part] = (glob_matcher(part), _PathNode())
            return glob[1]
        return self.children.setdefault(part, _PathNode())


def pmatch_pred(entries: list[str]) -> Pred:
    """libsinsp's path_prefix_search: some entry equals the value or is a prefix of it, component by component.

    Paths split on `/` and empty components are ignored. The entries form a tree walked along the value,
    each node at most once, so a match costs O(len(value) + size of the set) whatever the two hold.
    """
    root = _PathNode()
    for entry in entries:
        node = root
        for part in entry.split("/"):
            if part:
                node = node.child(part)
        node.terminal = True

    def match(value: str) -> bool:
        parts = [part for part in value.split("/") if part]
        branches = [(root, 0)]
        while branches:
            node: _PathNode | None
            node, depth = branches.pop()
            while node is not None:
                if node.terminal:
                    return True
                if depth == len(parts):
                    break
                part = parts[depth]
                depth += 1
                if node.globs:
                    branches.extend((sub, depth) for glob, sub in node.globs.values() if glob(part))
                node = node.children.get(part)
        return False

    return match


def dynamic_pred(op: str, modifier: str | None) -> Callable[[Any, Any], bool]:
    """Compare two present values at run time (right-hand side from `val()` or a transformer)."""
    if op in LIST_OPS:
        def in_values(a: Any, b: Any) -> bool:
            pool = b if isinstance(b, tuple) else (b,)
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

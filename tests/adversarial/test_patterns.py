"""Pattern operators against hostile input, as Falco matches them (issue 13).

A backtracking `regex` froze the whole agent (webhook, /healthz, SIGTERM) for 40 s on a 35-character URI, and
a multi-star glob took 0.65 s on an 80-character value. Falco runs `regex` with RE2 (RE2::POSIX, anchored at both
ends) and `glob` with glibc's fnmatch(3); here the same inputs must take milliseconds, through the engine and in
a running agent, and match exactly what Falco matches.
"""

from __future__ import annotations

import ctypes
import functools
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.builtin_sources import new_engine
from agent.engine.engine import Engine, RulesText
from agent.engine.operators import pmatch_pred, scalar_pred
from tests.support.agent_process import Agent
from tests.support.rules_harness import fired
from tests.support.webhook_agent import healthz, listening, post

EVIL_REGEX = "/apis?/([a-z0-9.-]+/?)+/exec"
EVIL_URI = "/api/" + "a" * 29 + "!"
EXEC_URI = "/api/v1/namespaces/shop/pods/cart/exec"
MULTI_STAR_GLOB = "*a*a*a*a*a*a*b"
# Generous: each case takes microseconds; the backtracking versions took from 0.6 s to minutes.
BOUND_S = 0.1


def audit_event(uri: str, n: int = 0) -> dict[str, Any]:
    return {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "auditID": f"audit-{n}",
        "stage": "ResponseComplete", "verb": "create", "user": {"username": "alice@example.com"},
        "requestURI": uri, "objectRef": {"resource": "pods", "namespace": "shop", "name": "cart"},
        "responseStatus": {"code": 101}, "sourceIPs": ["192.0.2.10"], "userAgent": "kubectl/v1.30.2",
        "requestReceivedTimestamp": "2026-11-29T10:00:00.000000Z", "stageTimestamp": "2026-11-29T10:00:00.010000Z",
    }


def rule(name: str, condition: str) -> str:
    return (f"- rule: {name}\n  desc: d\n  condition: |-\n    {condition}\n  output: hit %ka.uri\n"
            "  priority: WARNING\n  source: k8s_audit\n")


def engine_with(*rules: str) -> Engine:
    engine = new_engine(rule_matching="all")
    result = engine.load_rules([RulesText("patterns.yaml", "".join(rules))])
    assert result.successful, result.as_text()
    return engine


def timed_fired(engine: Engine, uri: str) -> tuple[list[str], float]:
    started = time.perf_counter()
    names = fired(engine, audit_event(uri), "k8s_audit")
    return names, time.perf_counter() - started


class TestHostileInputIsCheap:
    def test_backtracking_regex(self) -> None:
        """The issue's regex and URI: no alert, in milliseconds; a real exec URI still alerts."""
        engine = engine_with(rule("Exec by regex", f'ka.uri regex "{EVIL_REGEX}"'))
        names, elapsed = timed_fired(engine, EVIL_URI)
        assert names == [] and elapsed < BOUND_S
        names, elapsed = timed_fired(engine, "/api/" + "a/" * 5000 + "!")
        assert names == [] and elapsed < BOUND_S
        assert fired(engine, audit_event(EXEC_URI), "k8s_audit") == ["Exec by regex"]

    @pytest.mark.parametrize(("pattern", "value"), [
        (MULTI_STAR_GLOB, "/" + "a" * 80),
        ("*[ab]*[ab]*[ab]*[ab]*[ab]*c", "/" + "ab" * 2000),
        ("*?*?*?*?*?*?*!", "/" + "x" * 5000),
    ])
    def test_multi_star_glob(self, pattern: str, value: str) -> None:
        """Star after star over a value that almost matches: no alert, in milliseconds; the matching value alerts."""
        engine = engine_with(rule("Globbed", f'ka.uri glob "{pattern}"'))
        names, elapsed = timed_fired(engine, value)
        assert names == [] and elapsed < BOUND_S
        assert fired(engine, audit_event(value + pattern[-1]), "k8s_audit") == ["Globbed"]

    def test_pmatch_over_a_deep_path_and_a_large_set(self) -> None:
        """A 10 000-component value against 2 000 entries, some globbed, sharing long prefixes."""
        deep = "/a" * 10_000
        entries = [f"/a{'/a' * k}/b{k}" for k in range(0, 2000, 2)] + [f"/a/*{'/a' * k}/c" for k in range(1000)]
        match = pmatch_pred(entries)
        started = time.perf_counter()
        assert not match(deep)
        assert time.perf_counter() - started < BOUND_S
        assert match("/a/a/a/b2/x") and match("/a/z/a/a/c")


def glob(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    return scalar_pred("iglob" if ignore_case else "glob", pattern)(value)


class TestFalcoSemantics:
    @pytest.mark.parametrize(("pattern", "value", "expected"), [
        # fnmatch(pattern, value, 0): no FNM_PATHNAME, no FNM_PERIOD.
        ("/etc/*", "/etc/ssh/sshd_config", True),
        ("/home/*/.ssh/*", "/home/alice/.ssh/id_rsa", True),
        ("*", ".hidden", True),
        ("a?c", "a/c", True),
        ("a[/]c", "a/c", True),
        ("a[!b]c", "abc", False),
        ("a[^b]c", "axc", True),
        ("[]a]", "]", True),
        ("[!]]", "]", False),
        ("[a-c]", "b", True),
        ("[c-a]", "b", False),
        ("[a-]", "-", True),
        ("[[:digit:]][[:upper:]]", "7Q", True),
        ("[[:alpha:]]", "7", False),
        ("[[:foo:]]", "f", False),
        (r"a\*", "a*", True),
        (r"a\*", "ab", False),
        (r"[\]]", "]", True),
        ("a\\", "a\\", False),  # glibc: "Trailing \ loses."
        ("[ab", "[ab", True),  # an unterminated `[` is an ordinary character
        ("[ab", "a", False),
        ("[[", "[[", True),
        ("*../../*", "/var/www/../../etc/passwd", True),
        # bytes, not characters: Falco runs in the C locale
        ("?", "é", False),
        ("??", "é", True),
        ("[é]", "é", False),
        ("?", "\udcff", True),  # a byte that was not UTF-8, as the kernel source decodes it
    ])
    def test_glob(self, pattern: str, value: str, expected: bool) -> None:
        assert glob(pattern, value) is expected

    @pytest.mark.parametrize(("pattern", "value", "expected"), [
        ("H*O", "hello", True),
        ("[A-C]", "b", True),
        ("[[:upper:]]", "a", False),  # classes test the byte as it is
        ("É", "é", False),  # only ASCII folds in the C locale
    ])
    def test_iglob(self, pattern: str, value: str, expected: bool) -> None:
        assert glob(pattern, value, ignore_case=True) is expected

    @pytest.mark.parametrize(("pattern", "value", "expected"), [
        ("h.l+o", "hello", True),
        ("ell", "hello", False),  # anchored at both ends
        ("a|ab", "ab", True),
        ("[[:digit:]]+", "2024", True),
        ("a.c", "a\nc", False),
        ("h.llo", "hèllo", True),  # UTF-8: `.` is one character, unlike a glob's `?`
        ("a.", "a\udcff", True),  # an invalid byte becomes one replacement character
        ("a*?", "aaa", True),  # POSIX syntax: `*?` is `(a*)?`, not a lazy star
    ])
    def test_regex(self, pattern: str, value: str, expected: bool) -> None:
        assert scalar_pred("regex", pattern)(value) is expected

    @pytest.mark.parametrize(("entries", "value", "expected"), [
        (["/srv/app"], "/srv/app/x", True),
        (["/srv/app"], "/srv/application", False),
        (["/srv/app/x"], "/srv/app", False),
        (["/"], "/anything/at/all", True),
        (["/var/l*"], "/var/log/syslog", True),
        (["/var/l*"], "/var/tmp", False),
        ([r"/a\b"], r"/a\b/c", True),  # no `? * [`: compared as it is
        ([r"/a\*"], "/a*/c", True),
        ([r"/a\*"], "/ab/c", False),
    ])
    def test_pmatch(self, entries: list[str], value: str, expected: bool) -> None:
        assert pmatch_pred(entries)(value) is expected


@functools.cache
def _glibc_fnmatch() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        libc = None
    if libc is None or not hasattr(libc, "gnu_get_libc_version"):
        pytest.skip("needs glibc, whose fnmatch(3) Falco calls")
    libc.fnmatch.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    return libc.fnmatch


FNM_CASEFOLD = 1 << 4
# Brackets with ranges, negation, classes (one unknown), escapes, and unterminated ones. Not stray `:`, `=` or
# `.` after a `[`: a malformed `[=`, `[:` or `[.` inside a bracket can make glibc go on from two places at once,
# which the linear matcher leaves out (see _GlobParser._bracket).
GLOB_PIECES = st.sampled_from([*"ab[]!^-*?zA", "\\", "\\]", "[:alpha:]", "[:upper:]", "[:foo:]", "[=a=]", "[.a.]"])


@settings(max_examples=3000, deadline=None)
@given(pattern=st.lists(GLOB_PIECES, max_size=8).map("".join),
       value=st.lists(st.sampled_from([*"ab[]!-\\zAB/"]), max_size=6).map("".join),
       ignore_case=st.booleans())
def test_glob_agrees_with_glibc_fnmatch(pattern: str, value: str, ignore_case: bool) -> None:
    """The system's fnmatch is what libsinsp calls: the two agree on every pattern and value."""
    expected = _glibc_fnmatch()(pattern.encode(), value.encode(), FNM_CASEFOLD if ignore_case else 0) == 0
    assert glob(pattern, value, ignore_case=ignore_case) is expected


@pytest.mark.parametrize(("pattern", "reason"), [
    (r"(a)\\1", r"invalid escape sequence: \1"),
    ("a(?=b)", "no argument for repetition operator: ?"),
    (r"\\d+", r"invalid escape sequence: \d"),
    ("(?i)exec", "no argument for repetition operator: ?"),
    ("/api/(v1", "missing ): /api/(v1"),
])
def test_patterns_re2_refuses_fail_the_load(pattern: str, reason: str) -> None:
    """Backreferences, lookaround, Perl classes and flags are not RE2 POSIX syntax: Falco refuses the rule."""
    engine = new_engine()
    result = engine.load_rules([RulesText("patterns.yaml", rule("Bad regex", f'ka.uri regex "{pattern}"'))])
    [error] = result.errors
    written = pattern.replace("\\\\", "\\")
    assert error.code.value == "LOAD_ERR_COMPILE_CONDITION"
    assert (error.location.item_kind, error.location.item_name) == ("rule", "Bad regex")
    assert f"invalid regex pattern '{written}': {reason}" in error.message


def _engine_turning(metrics: str) -> None:
    """/healthz answers at once, and the engine loop turned just now: it is not stuck in an evaluation."""
    started = time.monotonic()
    _, health = healthz(metrics)
    assert time.monotonic() - started < 2
    assert health["heartbeat_age_s"] < 1 and "engine_loop" not in {p["part"] for p in health["problems"]}, health


@pytest.mark.server
def test_running_agent_stays_responsive_under_the_backtracking_regex(tmp_path: Path) -> None:
    """The issue's scenario end to end: during the attack the agent answers /healthz, it alerts on the next real
    exec within seconds (so the whole attack was evaluated by then), and it stops promptly on SIGTERM."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(rule("Exec by regex", f'ka.uri regex "{EVIL_REGEX}"'))
    agent = Agent("--json", "-r", str(rules), "-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0")
    agent.read_alerts()
    try:
        urls = listening(agent, "webhook_listening", "metrics_listening")
        webhook, metrics = urls["webhook_listening"], urls["metrics_listening"].removesuffix("/metrics")
        attack = {"kind": "EventList", "items": [audit_event(EVIL_URI, n) for n in range(50)]}
        assert post(webhook, attack)[0] == 200
        _engine_turning(metrics)

        started = time.monotonic()
        assert post(webhook, audit_event(EXEC_URI, 50))[0] == 200
        [alert] = agent.wait_for_alerts(1, timeout_s=10)
        assert alert["rule"] == "Exec by regex" and alert["output_fields"]["ka.uri"] == EXEC_URI
        assert time.monotonic() - started < 5
        _engine_turning(metrics)
    finally:
        started = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        try:
            code = agent.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.proc.kill()
            raise
    assert code == 0 and time.monotonic() - started < 5
    assert agent.alerts.empty()  # the attack raised nothing

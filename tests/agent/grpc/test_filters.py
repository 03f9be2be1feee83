"""Filter lists compile to one predicate with Tetragon's any-of-list, all-of-fields semantics."""

from __future__ import annotations

import re

import pytest

from agent.grpc._gen.falco_agent.v1 import alerts_pb2 as pb
from agent.grpc.client import make_filter
from agent.grpc.filters import MAX_FILTERS, MAX_GLOB_LENGTH, MAX_GLOBS, MAX_VALUES, FilterError, compile_selection
from agent.priority import Priority


def _passes(allow: list[pb.AlertFilter], deny: list[pb.AlertFilter], priority: Priority = Priority.WARNING,
            source: str = "syscall", rule: str = "Write below etc", tags: tuple[str, ...] = ()) -> bool:
    return compile_selection(allow, deny)(int(priority), source, rule, tags)


class TestSingleFilter:
    def test_empty_lists_pass_everything(self) -> None:
        """No filters: every alert is delivered."""
        assert _passes([], [])

    def test_min_priority_passes_that_level_and_more_severe(self) -> None:
        """WARNING passes CRITICAL and WARNING, not NOTICE."""
        allow = [make_filter(min_priority=Priority.WARNING)]
        assert _passes(allow, [], Priority.CRITICAL)
        assert _passes(allow, [], Priority.WARNING)
        assert not _passes(allow, [], Priority.NOTICE)

    def test_sources_match_exactly(self) -> None:
        """An alert passes when its source is one of those listed."""
        allow = [make_filter(sources=["k8s_audit", "aws_cloudtrail"])]
        assert _passes(allow, [], source="k8s_audit")
        assert not _passes(allow, [], source="syscall")

    def test_rules_match_by_name_or_glob(self) -> None:
        """Rule names match exactly or as shell globs, case-sensitively."""
        allow = [make_filter(rules=["Terminal shell in container", "Write below *"])]
        assert _passes(allow, [], rule="Write below etc")
        assert _passes(allow, [], rule="Terminal shell in container")
        assert not _passes(allow, [], rule="write below etc")
        assert not _passes(allow, [], rule="Terminal shell")

    def test_tags_any_and_all(self) -> None:
        """tags_any needs one listed tag; tags_all needs every listed tag."""
        any_of = [make_filter(tags_any=["mitre_execution", "container"])]
        all_of = [make_filter(tags_all=["mitre_execution", "container"])]
        assert _passes(any_of, [], tags=("container", "shell"))
        assert not _passes(any_of, [], tags=("shell",))
        assert _passes(all_of, [], tags=("container", "mitre_execution", "shell"))
        assert not _passes(all_of, [], tags=("container",))

    def test_every_set_field_must_match(self) -> None:
        """Fields within one filter combine with AND."""
        allow = [make_filter(min_priority=Priority.ERROR, sources=["syscall"])]
        assert _passes(allow, [], Priority.CRITICAL, "syscall")
        assert not _passes(allow, [], Priority.CRITICAL, "k8s_audit")
        assert not _passes(allow, [], Priority.WARNING, "syscall")


class TestLists:
    def test_any_allow_filter_passes(self) -> None:
        """Filters in the allow list combine with OR."""
        allow = [make_filter(sources=["k8s_audit"]), make_filter(min_priority=Priority.CRITICAL)]
        assert _passes(allow, [], Priority.DEBUG, "k8s_audit")
        assert _passes(allow, [], Priority.CRITICAL, "syscall")
        assert not _passes(allow, [], Priority.WARNING, "syscall")

    def test_deny_list_wins(self) -> None:
        """An alert matching any deny filter is dropped even when allowed."""
        deny = [make_filter(rules=["Write below *"])]
        assert not _passes([], deny, rule="Write below etc")
        assert _passes([], deny, rule="Read sensitive file")

    def test_empty_deny_filter_is_refused(self) -> None:
        """A deny filter with no field set would drop everything: it is an error, not a silent mute."""
        with pytest.raises(FilterError):
            compile_selection([], [pb.AlertFilter()])

    def test_unknown_priority_is_refused(self) -> None:
        """A priority number outside the enum is an error."""
        with pytest.raises(FilterError):
            # Proto3 enums are open, so the wire (unlike the generated stub's annotation) allows any number.
            compile_selection([pb.AlertFilter(min_priority=42)], [])  # type: ignore[arg-type]


class TestLimits:
    """Filters run on the engine's thread for every alert: 100,000 rule globs took 14 s and 400 MB to compile, then
    150 ms per alert, stalling every source. Each limit is refused naming it; the limit itself compiles."""

    @pytest.mark.parametrize(("allow", "deny", "message"), [
        ([pb.AlertFilter(sources=["s"])] * (MAX_FILTERS + 1), [],
         f"allow_list has {MAX_FILTERS + 1} filters, more than the limit of {MAX_FILTERS}"),
        ([], [pb.AlertFilter(sources=["s"])] * (MAX_FILTERS + 1),
         f"deny_list has {MAX_FILTERS + 1} filters, more than the limit of {MAX_FILTERS}"),
        ([pb.AlertFilter(tags_any=["t"] * 100_000)], [],
         f"the filters name 100000 sources, rules and tags, more than the limit of {MAX_VALUES}"),
        ([pb.AlertFilter(rules=[f"Rule {i}*" for i in range(100_000)])], [],
         f"the filters name 100000 sources, rules and tags, more than the limit of {MAX_VALUES}"),
        ([pb.AlertFilter(rules=[f"Rule {i}*" for i in range(MAX_GLOBS)])], [pb.AlertFilter(rules=["*x"])],
         f"the filters hold {MAX_GLOBS + 1} rule globs, more than the limit of {MAX_GLOBS}"),
        ([pb.AlertFilter(rules=["*a" * MAX_GLOB_LENGTH])], [],
         f"is {2 * MAX_GLOB_LENGTH} characters long, more than the limit of {MAX_GLOB_LENGTH}"),
    ], ids=["allow filters", "deny filters", "tags", "rule globs", "globs in both lists", "glob length"])
    def test_over_a_limit_is_refused_naming_it(self, allow: list[pb.AlertFilter], deny: list[pb.AlertFilter],
                                               message: str) -> None:
        with pytest.raises(FilterError, match=re.escape(message)):
            compile_selection(allow, deny)

    def test_at_the_limits_compiles(self) -> None:
        """Every limit reached at once still compiles, and filters as asked."""
        globs = pb.AlertFilter(rules=[f"Rule {i:03d}*".ljust(MAX_GLOB_LENGTH, "?") for i in range(MAX_GLOBS)])
        sources = [pb.AlertFilter(sources=["k8s_audit"])] * (MAX_FILTERS - 2)
        deny = [pb.AlertFilter(tags_any=["noisy"])] * MAX_FILTERS
        names = pb.AlertFilter(rules=[f"Name {i}" for i in range(MAX_VALUES - MAX_GLOBS - len(sources) - len(deny))])
        allow = [globs, names, *sources]
        assert _passes(allow, deny, rule="Name 7") and _passes(allow, deny, source="k8s_audit")
        assert _passes(allow, deny, rule="Rule 042" + "x" * MAX_GLOB_LENGTH)
        assert not _passes(allow, deny, rule="Name 7", tags=("noisy",)) and not _passes(allow, deny, rule="Other")

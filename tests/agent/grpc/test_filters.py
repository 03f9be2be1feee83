"""Filter lists compile to one predicate with Tetragon's any-of-list, all-of-fields semantics."""

from __future__ import annotations

import pytest

from agent.grpc._gen.falco_agent.v1 import alerts_pb2 as pb
from agent.grpc.client import make_filter
from agent.grpc.filters import FilterError, compile_selection
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

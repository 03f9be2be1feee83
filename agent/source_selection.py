"""Which event sources run: Falco's `--enable-source` / `--disable-source`, checked against the known names."""

from __future__ import annotations

from collections.abc import Sequence

from agent.errors import AgentError


class SourceSelectionError(AgentError):
    """The command line names sources that cannot be selected this way; a usage error."""


def select_sources(known: Sequence[str], *, enable: Sequence[str] = (), disable: Sequence[str] = ()) -> frozenset[str]:
    """The event sources to run among `known`.

    As in Falco: `enable` runs only the named sources, `disable` runs all but the named ones, the two
    cannot be mixed, and at least one source must remain.
    """
    valid = ", ".join(known)
    if enable and disable:
        raise SourceSelectionError("--enable-source and --disable-source cannot be mixed")
    for flag, names in (("--enable-source", enable), ("--disable-source", disable)):
        unknown = [name for name in names if name not in known]
        if unknown:
            raise SourceSelectionError(f"{flag}: unknown event source {', '.join(map(repr, unknown))}; "
                                       f"valid names: {valid}")
    if enable:
        return frozenset(enable)
    remaining = frozenset(known) - frozenset(disable)
    if not remaining:
        raise SourceSelectionError(f"--disable-source: every event source is disabled ({valid}); keep at least one")
    return remaining

"""Hypothesis strategies shared by the decoders' property tests: JSON documents and RFC 3339 times."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

ANY_YEAR = st.integers(0, 9999)


def json_values(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """JSON values: `scalars`, and small arrays and objects of them, nested."""
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5),
        ),
        max_leaves=10,
    )


@st.composite
def rfc3339_times(draw: st.DrawFn, years: st.SearchStrategy[int] = ANY_YEAR, max_fraction_digits: int = 9) -> str:
    """A well-formed RFC 3339 time: 0 to `max_fraction_digits` fractional digits, `Z` or a numeric offset, either
    letter case."""
    stamp = "{:04d}-{:02d}-{:02d}{}{:02d}:{:02d}:{:02d}".format(
        draw(years), draw(st.integers(1, 12)), draw(st.integers(1, 28)), draw(st.sampled_from("Tt")),
        draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59)),
    )
    digits = draw(st.integers(0, max_fraction_digits))
    if digits:
        stamp += "." + draw(st.text("0123456789", min_size=digits, max_size=digits))
    if draw(st.booleans()):
        return stamp + draw(st.sampled_from("Zz"))
    return stamp + "{}{:02d}:{:02d}".format(draw(st.sampled_from("+-")), draw(st.integers(0, 23)),
                                           draw(st.integers(0, 59)))

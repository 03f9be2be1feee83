"""Builders of `ka.*` extractors: walk a key path into an audit event and shape what is found.

Every extractor built here first checks the event's top-level `auditID`: without it the payload
is not an audit event and every `ka.*` field is not available, as in the k8saudit plugin.

Walking follows the plugin's rule for key paths: when the walk meets an array, it either visits
every element with the rest of the path or, when the field was given an `[N]` argument, only
element N. Elements lacking the rest of the path leave a `MISSING` placeholder, so that each
field can decide whether a gap is skipped, defaulted or makes the whole field unavailable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from agent.event import Event
from agent.fields import Extractor, ExtractorFactory, InlineRead, Value, template_literal, with_inline
from agent.json_fields import json_text

#: Marks "this element has no value at the rest of the path".
MISSING: Any = object()
#: A path step that keeps the element itself (after the array fan-out), whatever its type.
SELF = ""

#: Turns the values found (MISSING included) into the field's strings; None means "not available".
Shaper = Callable[[list[Any]], list[str] | None]


def walk(node: Any, keys: tuple[str, ...], start: int, index: int | None) -> list[Any] | None:
    """Values at `keys[start:]` below `node`, one per array element visited; None when absent."""
    position = start
    for key in keys[start:]:
        if node.__class__ is dict and key:  # the usual step, tested first
            node = node.get(key, MISSING)
            if node is MISSING:
                return None
        elif node.__class__ is list:
            if index is None:
                return _each(node, keys, position)
            if index >= len(node):
                return None
            node = node[index]
            if key:
                if node.__class__ is not dict:
                    return None
                node = node.get(key, MISSING)
                if node is MISSING:
                    return None
        elif key:
            return None
        position += 1
    return [node]


def _each(items: list[Any], keys: tuple[str, ...], position: int) -> list[Any]:
    """`walk` over every element of an array, inlined for the usual one-array path."""
    found: list[Any] = []
    rest = keys[position:]
    for item in items:
        node = item
        for key in rest:
            if node.__class__ is list:
                break
            if key:
                if node.__class__ is not dict:
                    node = MISSING
                    break
                node = node.get(key, MISSING)
                if node is MISSING:
                    break
        else:
            found.append(node)
            continue
        if node is MISSING:
            found.append(MISSING)
        else:
            # An array inside the array (rare): walk this element again, fanning out below.
            below = walk(item, keys, position, None)
            if below is None:
                found.append(MISSING)
            else:
                found += below
    return found


Walker = Callable[[Any], list[Any] | None]


@functools.cache
def path_walker(keys: tuple[str, ...], texts: Shaper | None = None) -> Walker:
    """`walk(node, keys, 0, None)` for one path, as code written for it: the steps unrolled, and each position an
    array may sit at with its own loop over the elements. An array met inside an element (rare) is walked by `walk`.
    Paths with a `SELF` step are walked by `walk` itself.

    With `texts` (`present_texts` or `all_texts`) the walk gives what that shaper gives of the values found, shaping
    them as it finds them, with no list of them and no call per value to make first; an event's pod fields are read
    this way."""
    if SELF in keys:
        def walk_with_self(node: Any) -> list[Any] | None:
            found = walk(node, keys, 0, None)
            return found if found is None or texts is None else texts(found)

        return walk_with_self
    namespace: dict[str, Any] = {"_M": MISSING, "_walk": walk, "_keys": keys, "_text": json_text, "_shape": texts}
    gap: tuple[str, ...]
    below: tuple[str, ...]
    if texts is None:
        gap, found = ("found.append(_M)", "continue"), "found.append(node)"
        below = ("found += [_M] if below is None else below", "continue")
        last = "return [node]"
    else:
        # A gap is skipped (present_texts) or makes the whole field unavailable (all_texts).
        gap = ("continue",) if texts is present_texts else ("return None",)
        found = "found.append(node if node.__class__ is str else _text(node))"
        below = ("below = _shape([_M] if below is None else below)", "if below is None:", "    return None",
                 "found += below", "continue")
        last = "return [node if node.__class__ is str else _text(node)]"
    lines = [line for position in range(len(keys)) for line in _each_source(keys, position, gap, found, below)]
    lines.append("def walk_path(node):")
    for position, key in enumerate(keys):
        lines += _step(key, "    ", ("return None",), (f"return _each{position}(node)",))
    lines.append(f"    {last}")
    exec(compile("\n".join(lines), f"<walk {'.'.join(keys)}>", "exec"), namespace)
    walker: Walker = namespace["walk_path"]
    return walker


def walker(keys: tuple[str, ...], index: int | None) -> Walker:
    """How a field walks `keys`: every element of the arrays on the way (`path_walker`), or element `index` of each."""
    return path_walker(keys) if index is None else lambda node: walk(node, keys, 0, index)


def _step(key: str, indent: str, on_missing: tuple[str, ...], on_list: tuple[str, ...]) -> list[str]:
    """Lines taking `node` one key down when it is an object; the statements `on_missing` when it is neither an
    object with the key nor an array, `on_list` when it is an array."""
    missing = [f"{indent}        {line}" for line in on_missing]
    return [f"{indent}if node.__class__ is dict:",
            f"{indent}    node = node.get({key!r}, _M)",
            f"{indent}    if node is _M:",
            *missing,
            f"{indent}elif node.__class__ is list:",
            *(f"{indent}    {line}" for line in on_list),
            f"{indent}else:",
            *(line[4:] for line in missing)]


def _each_source(keys: tuple[str, ...], position: int, gap: tuple[str, ...], found: str,
                 below: tuple[str, ...]) -> list[str]:
    """A function `_each<position>(items)`: `_each(items, keys, position)` unrolled, where an element lacking the
    rest of the path runs `gap`, a value found runs `found`, and an array inside an element, walked into `below`,
    runs the lines `below`."""
    lines = [f"def _each{position}(items):", "    found = []", "    for item in items:", "        node = item"]
    for key in keys[position:]:
        lines += _step(key, "        ", gap, (f"below = _walk(item, _keys, {position}, None)", *below))
    lines += [f"        {found}", "    return found"]
    return lines


def text(value: Any) -> str:
    """A JSON value as field text; strings stay unquoted."""
    return value if value.__class__ is str else json_text(value)


def is_audit_event(payload: Any) -> bool:
    """Whether the payload carries the `auditID` key that every `ka.*` field requires."""
    return payload.__class__ is dict and "auditID" in payload


def value_at(node: Any, keys: tuple[str, ...]) -> Any:
    """The value at a key path through objects only, or `MISSING`."""
    for key in keys:
        if node.__class__ is not dict:
            return MISSING
        node = node.get(key, MISSING)
        if node is MISSING:
            return MISSING
    return node


#: The precondition of every `ka.*` field, as generated code tests it (see agent.fields.InlineRead).
AUDIT_EVENT_GUARD = "{payload}.__class__ is dict and 'auditID' in {payload}"


def scalar_at(*keys: str) -> ExtractorFactory:
    """A single value at a fixed key path: strings unquoted, other JSON as compact text.

    Generated code reads it inline (`scalar_inline`): these are the fields rules read on every event.
    """

    def factory(_arg: str | None) -> Extractor:
        return with_inline(_scalar_extractor(keys), scalar_inline(keys))

    return factory


def scalar_inline(keys: tuple[str, ...]) -> InlineRead:
    """The inline form of `scalar_at(*keys)`: its dict steps as one expression, under the audit event guard; a value
    that is neither a string nor an integer is left to the extractor (and the event's cache)."""
    node = "{payload}"
    for key in keys:
        step = template_literal(key)
        if node == "{payload}":
            node = f"{{payload}}.get({step}, {{MISSING}})"
        else:
            node = f"({{tmp}}.get({step}, {{MISSING}}) if ({{tmp}} := {node}).__class__ is dict else {{MISSING}})"
    # An integer (a status code) is written as JSON writes it; other values (a configmap's data) become text in the
    # extractor, once per event.
    value = f"({{tmp}} if ({{tmp}} := {node}).__class__ is str else None if {{tmp}} is {{MISSING}} else " \
            "str({tmp}) if {tmp}.__class__ is int else {fallback})"
    return InlineRead(AUDIT_EVENT_GUARD, value, (("MISSING", MISSING),))


def _scalar_extractor(keys: tuple[str, ...]) -> Extractor:
    """The extractor of `scalar_at(*keys)` (generated code reads the field inline, this where that cannot tell)."""

    def extract(event: Event) -> Value:
        payload = event.payload
        if payload.__class__ is not dict or "auditID" not in payload:
            return None
        node: Any = payload
        for key in keys:
            node = node.get(key, MISSING) if node.__class__ is dict else MISSING
            if node is MISSING:
                return None
        return node if node.__class__ is str else json_text(node)

    return extract


def list_at(*keys: str) -> ExtractorFactory:
    """Every element of the array at a fixed key path; a non-array or empty array is unavailable."""

    def factory(_arg: str | None) -> Extractor:
        def extract(event: Event) -> Value:
            payload = event.payload
            if payload.__class__ is not dict or "auditID" not in payload:
                return None
            node = value_at(payload, keys)
            if node.__class__ is not list or not node:
                return None
            return tuple([item if item.__class__ is str else json_text(item) for item in node])

        return extract

    return factory


def collected(keys: tuple[str, ...], shape: Shaper) -> ExtractorFactory:
    """A list field gathered by `walk` and shaped by `shape`; an `[N]` argument narrows the walk.

    With an index the result is one string: the chosen element's value, or its first value when
    it holds several (a container's ports, a role rule's verbs), since the engine treats an
    indexed list field as a scalar; the plugin would return them all.
    """

    def factory(arg: str | None) -> Extractor:
        index = None if arg is None else int(arg)
        # The usual shapers run inside the walk (`path_walker`'s `texts`): no list of found values to shape after.
        walked = index is None and shape in _WALKED_SHAPES
        walk_path = path_walker(keys, shape) if walked else walker(keys, index)
        after = None if walked else shape

        def extract(event: Event) -> Value:
            payload = event.payload
            if payload.__class__ is not dict or "auditID" not in payload:
                return None
            found = walk_path(payload)
            if found is None:
                return None
            return finish(found if after is None else after(found), index)

        if not walked:
            return extract
        # `finish` without an index, written out: generated code calls the walk alone, with no call of `extract`
        # and no test of the event's shape that its function has not made already.
        inline = "(tuple({tmp}) if ({tmp} := {walk}({payload})) else None)"
        return with_inline(extract, InlineRead(AUDIT_EVENT_GUARD, inline, (("walk", walk_path),)))

    return factory


def finish(values: list[str] | None, index: int | None) -> Value:
    """The field value for the strings found: None if none, one string under an index."""
    if not values:
        return None
    if index is not None:
        return values[0]
    return tuple(values)


def present_texts(found: list[Any]) -> list[str]:
    """Shaper: the values that exist, as text; gaps are skipped."""
    return [value if value.__class__ is str else json_text(value) for value in found if value is not MISSING]


def all_texts(found: list[Any]) -> list[str] | None:
    """Shaper: every value as text, or unavailable as soon as one element lacks it."""
    values = []
    for value in found:
        if value is MISSING:
            return None
        values.append(value if value.__class__ is str else json_text(value))
    return values


#: The shapers a walk can apply as it goes (`path_walker`'s `texts`).
_WALKED_SHAPES = (present_texts, all_texts)


def flattened_texts(found: list[Any]) -> list[str]:
    """Shaper: the elements of every array found, concatenated; non-arrays are ignored."""
    values: list[str] = []
    for value in found:
        if value.__class__ is list:
            values += [text(item) for item in value]
    return values


def constant(value: str) -> ExtractorFactory:
    """A field that is always `value` on audit events (kept for old rules)."""

    def factory(_arg: str | None) -> Extractor:
        return lambda event: value if is_audit_event(event.payload) else None

    return factory


def computed(compute: Callable[[dict[str, Any], str | None], Value]) -> ExtractorFactory:
    """A field with its own logic; `compute` gets the audit event dict and the field argument."""

    def factory(arg: str | None) -> Extractor:
        def extract(event: Event) -> Value:
            payload = event.payload
            if payload.__class__ is not dict or "auditID" not in payload:
                return None
            return compute(payload, arg)

        return extract

    return factory

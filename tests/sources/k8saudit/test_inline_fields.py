"""The `ka.*` and `jevt.*` fields generated code reads inline give what their extractors give, and the path walkers
written per path find what `walk` finds."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest

from agent.event import Event
from agent.fields import ArgKind, Extractor, FieldTable, Value, cached_extractor, generated_read, inline_read
from sources.k8saudit.extraction import MISSING, SELF, Shaper, all_texts, path_walker, present_texts, walk
from sources.k8saudit.fields import k8s_audit_source


@functools.cache
def table() -> FieldTable:
    return k8s_audit_source().fields


def read_inline(extract: Extractor, event: Event) -> Value:
    """The value of a field as a generated function reads it (its inline form, the cache as fallback)."""
    return generated_read(cached_extractor("key", extract))(event)


def inline_fields() -> list[str]:
    return [spec.name for spec in table() if spec.is_implemented and ArgKind.REQUIRED not in spec.arg
            and inline_read(spec.bind_uncached(None)) is not None]


#: JSON values of every type, at the places fields read.
VALUES: list[Any] = ["text", "", 0, 201, -5, 2**70, 1.5, True, False, None, {"a": 1}, [], ["x", 2]]


def payloads() -> list[Any]:
    audit = {"auditID": "id", "kind": "Event"}
    shapes: list[Any] = [None, "text", 3, [], [audit], {"kind": "Event"}, dict(audit)]
    for value in VALUES:
        shapes += [
            {**audit, "verb": value, "stage": value, "user": value, "objectRef": value, "annotations": value,
             "requestObject": value, "responseStatus": value},
            {**audit, "user": {"username": value}, "objectRef": {"name": value, "resource": value},
             "responseStatus": {"code": value}, "annotations": {"authorization.k8s.io/decision": value},
             "requestObject": {"roleRef": {"name": value}, "spec": {"type": value, "hostNetwork": value,
                                                                    "securityContext": {"runAsUser": value}}}},
            {**audit, "requestObject": {"roleRef": value, "spec": {"securityContext": value}}},
            # The list fields: elements of every shape, values of every type.
            {**audit, "requestObject": {
                "spec": {"containers": value, "volumes": [{"hostPath": {"path": value}}, value, {}],
                         "initContainers": [value, {"image": value, "securityContext": {"privileged": value},
                                                    "ports": [{"hostPort": value}, value]}, {}]},
                "rules": [{"verbs": value, "resources": [value, "pods"]}, value],
                "subjects": [{"name": value}, value]}},
        ]
    return shapes


class TestInlineFields:
    def test_the_every_event_fields_are_inline(self) -> None:
        names = set(inline_fields())
        assert {"ka.verb", "ka.user.name", "ka.target.resource", "ka.target.subresource", "ka.response.code",
                "ka.req.binding.role", "jevt.rawtime", "ka.req.pod.containers.privileged",
                "ka.req.pod.initContainers.image", "ka.req.pod.volumes.hostpath"} <= names

    @pytest.mark.parametrize("name", inline_fields())
    def test_inline_value_is_the_extractors(self, name: str) -> None:
        """Non-object payloads, no auditID, missing keys, objects where text is expected, every JSON type."""
        spec = table().get(name)
        assert spec is not None
        extract = spec.bind_uncached(None)
        for payload in payloads():
            expected = extract(Event("k8s_audit", 12, payload))
            assert read_inline(extract, Event("k8s_audit", 12, payload)) == expected, (name, payload)

    @pytest.mark.parametrize("pointer", ["/stage", "/0", "/user/username", "/objectRef", "/{stage}"])
    def test_json_value_inline_is_the_extractors(self, pointer: str) -> None:
        """`jevt.value` of a one-step pointer reads objects inline; a list payload goes to the extractor."""
        spec = table().get("jevt.value")
        assert spec is not None
        extract = spec.bind_uncached(pointer)
        for payload in [*payloads(), ["first", "second"], {"0": "zero", "{stage}": "braced"}]:
            expected = extract(Event("k8s_audit", 0, payload))
            assert read_inline(extract, Event("k8s_audit", 0, payload)) == expected, (pointer, payload)


def random_document(rng: random.Random, depth: int) -> Any:
    leaves: list[Any] = [None, 1, "x", [], {}, [1], [{"c": 1}], {"c": [1, 2]}, [[{"c": 3}]]]
    if depth == 0:
        return rng.choice(leaves)
    roll = rng.random()
    if roll < 0.4:
        return {rng.choice("abcx"): random_document(rng, depth - 1) for _ in range(rng.randint(0, 2))}
    if roll < 0.7:
        return [random_document(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return rng.choice(leaves)


class TestPathWalker:
    @pytest.mark.parametrize("keys", [("a",), ("a", "b"), ("a", "b", "c"), ("c", "b"), ("a", "b", "c", "a")])
    def test_finds_what_walk_finds(self, keys: tuple[str, ...]) -> None:
        """Arrays at any step, arrays in arrays, empty arrays, scalars where objects are expected."""
        rng = random.Random(17)
        walker = path_walker(keys)
        for _ in range(5000):
            document = random_document(rng, 5)
            expected, found = walk(document, keys, 0, None), walker(document)
            assert found == expected, (keys, document)
            if found is not None and expected is not None:
                assert [v is MISSING for v in found] == [v is MISSING for v in expected]

    @pytest.mark.parametrize("shape", [present_texts, all_texts])
    @pytest.mark.parametrize("keys", [("a",), ("a", "b"), ("a", "b", "c"), ("c", "b"), ("a", "b", "c", "a"),
                                      ("a", SELF), ("a", SELF, "c")])
    def test_shaping_as_it_walks_gives_what_shaping_after_gives(self, keys: tuple[str, ...], shape: Shaper) -> None:
        """Gaps skipped or making the field unavailable, values turned into text, arrays in arrays."""
        rng = random.Random(23)
        walker = path_walker(keys, shape)
        for _ in range(5000):
            document = random_document(rng, 5)
            found = walk(document, keys, 0, None)
            assert walker(document) == (None if found is None else shape(found)), (keys, document)

    def test_pod_containers(self) -> None:
        spec = {"containers": [{"image": "a", "securityContext": {"privileged": True}}, {"image": "b"}, "odd"]}
        walker = path_walker(("requestObject", "spec", "containers", "securityContext", "privileged"))
        assert walker({"requestObject": {"spec": spec}}) == [True, MISSING, MISSING]
        assert walker({"requestObject": {"spec": {}}}) is None

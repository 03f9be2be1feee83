"""Unwrap audit events from the envelope a managed cluster exports them in (AKS diagnostic settings).

AKS routes its API server audit log through Azure diagnostic settings. Every exported record is
an object such as ``{"category": "kube-audit", "time": ..., "resourceId": ...,
"properties": {"log": "<one audit Event as a JSON string>", ...}}``; an Event Hub message holds
``{"records": [record, ...]}``, while a storage account blob holds one record per line. Records
of other diagnostic categories routed to the same place (``kube-apiserver``, ``guard``, ...) are
not audit events and are passed over.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from agent.errors import DecodeError
from agent.json_fields import json_type_name
from agent.location import Location

#: Diagnostic categories whose records carry one Kubernetes audit Event each.
AUDIT_CATEGORIES = frozenset({"kube-audit", "kube-audit-admin"})


def is_record(item: Any) -> bool:
    """Whether an item is shaped like a diagnostic record rather than an audit Event."""
    return (
        isinstance(item, dict)
        and ("category" in item or "properties" in item)
        and "kind" not in item
        and "auditID" not in item
    )


def is_audit_record(item: Any) -> bool:
    """Whether an item is a diagnostic record of an audit category (good or malformed)."""
    if not is_record(item):
        return False
    category = item.get("category")
    return isinstance(category, str) and category in AUDIT_CATEGORIES  # a list or object is unhashable


def envelope_records(document: Any) -> list[Any] | DecodeError | None:
    """The records of an envelope object (a ``records`` batch or one record), or None if it is not one.

    A ``records`` key whose value is not an array is an error of the whole document; the caller
    supplies its location.
    """
    if not isinstance(document, dict) or "kind" in document:
        return None
    if "records" in document:
        records = document["records"]
        if not isinstance(records, list):
            return DecodeError(f"not an AKS diagnostic log: 'records' is {json_type_name(records)}, expected an array",
                               reason="bad_envelope")
        return records
    return [document] if is_record(document) else None


def is_envelope(document: Any) -> bool:
    """Whether a document is an AKS export: a records batch, one record, or an array of records.

    At least one record must be of an audit category, so that other Azure exports (activity
    logs, other resources' diagnostics) are left for other decoders.
    """
    if isinstance(document, list):
        items: Any = document
    else:
        records = envelope_records(document)
        if records is None or isinstance(records, DecodeError):
            return False
        items = records
    for item in items:
        if is_audit_record(item):
            return True
    return False


def audit_event_of(record: Any, *, origin: str, index: int) -> dict[str, Any] | DecodeError | None:
    """The audit Event a record carries in ``properties.log``, a DecodeError, or None for another category."""
    category = record.get("category") if isinstance(record, dict) else None
    if isinstance(category, str) and category not in AUDIT_CATEGORIES:
        return None
    problem: str
    if not isinstance(record, dict):
        problem = f"not an AKS diagnostic record: expected a JSON object, got {json_type_name(record)}"
    elif not isinstance(record.get("properties"), dict):
        problem = "AKS diagnostic record has no 'properties' object"
    elif "log" not in record["properties"]:
        problem = "AKS diagnostic record has no 'properties.log'"
    elif not isinstance(record["properties"]["log"], str):
        problem = f"AKS 'properties.log' is {json_type_name(record['properties']['log'])}, expected a JSON string"
    else:
        try:
            event = orjson.loads(record["properties"]["log"])
        except orjson.JSONDecodeError as exc:
            problem = f"AKS 'properties.log' is not valid JSON: {exc}"
        else:
            if isinstance(event, dict):
                return event
            problem = f"AKS 'properties.log' holds {json_type_name(event)}, expected a JSON object"
    return DecodeError(problem, Location(file=origin, item_kind="record", item_name=str(index)), reason="bad_envelope")


def unwrap_envelope(document: Any, *, origin: str) -> Iterator[dict[str, Any] | DecodeError]:
    """Plain audit Event dicts of an AKS export, in order, with a DecodeError per bad record."""
    records = document if isinstance(document, list) else envelope_records(document)
    if records is None:
        return
    if isinstance(records, DecodeError):
        yield DecodeError(records.message, Location(file=origin, item_kind="document"), reason=records.reason)
        return
    for index, record in enumerate(records):
        event = audit_event_of(record, origin=origin, index=index)
        if event is not None:
            yield event



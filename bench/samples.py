"""The reference sample events the benchmarks replay, and the read-heavy audit mix built from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
#: The verbs added after each sample to make the read-heavy mix: nine reads per write, as API servers see.
READ_VERBS = ("get", "list", "watch", "get", "list", "get", "watch", "get", "list")


def k8s_audit_events() -> list[dict[str, Any]]:
    """Every audit event of Falco's regression traces (the malformed `{"kind": 0}` trace left out)."""
    folder = REFERENCE / "samples" / "k8s_audit" / "falco-regression"
    events: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("expected"):
            continue
        events += [e for e in map(orjson.loads, filter(bytes.strip, path.read_bytes().splitlines()))
                   if isinstance(e, dict) and "auditID" in e]
    return events


def with_reads(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event followed by nine reads of the same object."""
    out: list[dict[str, Any]] = []
    for event in events:
        out.append(event)
        out += [{**event, "verb": verb} for verb in READ_VERBS]
    return out


def cloudtrail_records() -> list[dict[str, Any]]:
    """Every record of the CloudTrail samples (Stratus files and the regression files)."""
    out: list[dict[str, Any]] = []
    for path in sorted((REFERENCE / "samples" / "cloudtrail").rglob("*.json")):
        if path.name == "expected.json":
            continue
        document = orjson.loads(path.read_bytes())
        records = document.get("Records", []) if isinstance(document, dict) else document
        out += [r for r in records if isinstance(r, dict)]
    return out

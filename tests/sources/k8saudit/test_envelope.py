"""Tests for sources/k8saudit/envelope.py: AKS diagnostic exports unwrapped into audit events."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.errors import DecodeError
from agent.event import Event
from agent.location import Location
from agent.recorded import recorded_events
from sources.k8saudit.decoder import K8sAuditDecoder
from sources.k8saudit.envelope import is_envelope, unwrap_envelope

CLUSTER_ID = ("/SUBSCRIPTIONS/0B7E2C44-5A1D-4F3B-9C2E-7D8A6B1F0E93/RESOURCEGROUPS/RG-PAYMENTS-PROD"
              "/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/AKS-PAYMENTS-WEU")

# A hand-written `kubectl exec` into a pod, as the API server of an AKS cluster would log it.
EXEC_EVENT: dict[str, Any] = {
    "kind": "Event",
    "apiVersion": "audit.k8s.io/v1",
    "level": "RequestResponse",
    "auditID": "9b3e51d2-74c0-4f6a-a2d8-3c1e0f5b7a10",
    "stage": "ResponseStarted",
    "requestURI": "/api/v1/namespaces/checkout/pods/cart-7c9d8f6b4-qm2zt/exec?command=sh&stdin=true&tty=true",
    "verb": "create",
    "user": {"username": "dana@contoso.example", "groups": ["oidc:platform-oncall", "system:authenticated"]},
    "sourceIPs": ["198.51.100.77"],
    "userAgent": "kubectl/v1.29.4 (darwin/arm64) kubernetes/55f2bc7",
    "objectRef": {"resource": "pods", "namespace": "checkout", "name": "cart-7c9d8f6b4-qm2zt",
                  "apiVersion": "v1", "subresource": "exec"},
    "responseStatus": {"metadata": {}, "code": 101},
    "requestReceivedTimestamp": "2024-09-12T08:41:07.118204Z",
    "stageTimestamp": "2024-09-12T08:41:07.209731Z",
    "annotations": {"authorization.k8s.io/decision": "allow",
                    "authorization.k8s.io/reason": "RBAC: allowed by ClusterRoleBinding \"oncall-edit\""},
}
DELETE_EVENT: dict[str, Any] = {
    **EXEC_EVENT,
    "level": "Metadata",
    "auditID": "0f2a7c61-2b5e-4d93-8e14-b6a9d0c3f852",
    "stage": "ResponseComplete",
    "requestURI": "/api/v1/namespaces/staging",
    "verb": "delete",
    "objectRef": {"resource": "namespaces", "name": "staging", "apiVersion": "v1"},
    "responseStatus": {"metadata": {}, "code": 200},
    "stageTimestamp": "2024-09-12T08:45:19.004417Z",
}


def record(event: Any, *, category: str = "kube-audit", log: Any = None) -> dict[str, Any]:
    """A diagnostic-settings record wrapping `event` (or the raw `log` value when given)."""
    return {
        "operationName": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
        "category": category,
        "ccpNamespace": "64f1c0e2a9b7d3000158c2ae",
        "resourceId": CLUSTER_ID,
        "properties": {
            "log": orjson.dumps(event).decode() if log is None else log,
            "stream": "stdout",
            "pod": "kube-apiserver-5d7f9c8b6-h4xkq",
            "containerID": "4be1c07d93a2f6e85d10c4b7a9e3f2d6c8b05a17e9d4f3c2b1a0e9d8c7b6a5f4",
        },
        "time": "2024-09-12T08:41:07.2100000Z",
        "Cloud": "AzureCloud",
        "Environment": "prod",
    }


def decode(document: Any) -> list[Event | DecodeError]:
    return list(K8sAuditDecoder(hostname="aks-payments-weu").events(document, origin="PT1H.json"))


class TestUnwrap:
    def test_records_batch_yields_each_audit_event(self) -> None:
        """An Event Hub style `{"records": [...]}` batch yields the audit Event of every record, in order."""
        document = {"records": [record(EXEC_EVENT), record(DELETE_EVENT, category="kube-audit-admin")]}
        assert list(unwrap_envelope(document, origin="hub")) == [EXEC_EVENT, DELETE_EVENT]

    def test_single_record_and_array_of_records(self) -> None:
        """One record object (a storage blob line) and a bare array of records unwrap the same way."""
        assert list(unwrap_envelope(record(EXEC_EVENT), origin="blob")) == [EXEC_EVENT]
        assert list(unwrap_envelope([record(EXEC_EVENT), record(DELETE_EVENT)], origin="blob")) == [
            EXEC_EVENT, DELETE_EVENT]

    def test_other_diagnostic_categories_are_passed_over(self) -> None:
        """Records of categories such as kube-apiserver or guard, routed to the same hub, yield nothing."""
        apiserver_line = record(None, category="kube-apiserver", log="I0912 08:41:07.1 1 trace.go:236] Trace")
        guard_line = record(None, category="guard", log="{\"level\":\"info\"}")
        document = {"records": [apiserver_line, record(EXEC_EVENT), guard_line]}
        assert list(unwrap_envelope(document, origin="hub")) == [EXEC_EVENT]

    @pytest.mark.parametrize(
        ("properties", "reason"),
        [(None, "has no 'properties' object"),
         ({"stream": "stdout"}, "has no 'properties.log'"),
         ({"log": {"kind": "Event"}}, "'properties.log' is an object, expected a JSON string"),
         ({"log": 17}, "'properties.log' is a number, expected a JSON string"),
         ({"log": "{\"kind\": \"Event\", \"auditID\": "}, "'properties.log' is not valid JSON"),
         ({"log": "[1, 2]"}, "'properties.log' holds an array, expected a JSON object"),
         ({"log": "\"just text\""}, "'properties.log' holds a string, expected a JSON object")],
    )
    def test_bad_record_yields_error_at_its_index(self, properties: Any, reason: str) -> None:
        """A record whose properties.log is missing, not a string, not JSON or not an object is reported by index."""
        bad = record(EXEC_EVENT)
        if properties is None:
            del bad["properties"]
        else:
            bad["properties"] = properties
        results = list(unwrap_envelope({"records": [record(EXEC_EVENT), bad, record(DELETE_EVENT)]}, origin="hub"))
        assert results[0] == EXEC_EVENT and results[2] == DELETE_EVENT
        error = results[1]
        assert isinstance(error, DecodeError)
        assert reason in error.message
        assert error.location == Location(file="hub", item_kind="record", item_name="1")

    def test_records_not_an_array_is_a_document_error(self) -> None:
        """A `records` value that is not an array yields one DecodeError for the whole document."""
        [error] = unwrap_envelope({"records": {"category": "kube-audit"}}, origin="hub")
        assert isinstance(error, DecodeError)
        assert error.message == "not an AKS diagnostic log: 'records' is an object, expected an array"
        assert error.location == Location(file="hub", item_kind="document")


class TestDecoder:
    def test_envelopes_are_claimed(self) -> None:
        """The decoder claims a records batch, a single audit record and an array of records."""
        decoder = K8sAuditDecoder()
        assert decoder.matches({"records": [record(EXEC_EVENT)]})
        assert decoder.matches(record(EXEC_EVENT, category="kube-audit-admin"))
        assert decoder.matches([record(EXEC_EVENT)])
        assert decoder.matches({"records": [record(None, log="not json")]})
        assert is_envelope({"records": [record(None, category="kube-apiserver", log="x"), record(EXEC_EVENT)]})

    @pytest.mark.parametrize(
        "document",
        [{"Records": [{"eventVersion": "1.08", "eventSource": "sts.amazonaws.com", "eventName": "AssumeRole"}]},
         {"Records": [record(EXEC_EVENT)]},
         {"records": [{"category": "Administrative", "operationName": "MICROSOFT.RESOURCES/DEPLOYMENTS/WRITE",
                       "properties": {"statusCode": "Created"}}]},
         {"records": [record(None, category="kube-apiserver", log="I0912 started")]},
         {"records": []}, {"records": "kube-audit"}],
    )
    def test_cloudtrail_and_other_azure_exports_are_not_claimed(self, document: Any) -> None:
        """CloudTrail `Records` and Azure exports without an audit-category record are left to other decoders."""
        assert not K8sAuditDecoder().matches(document)

    def test_events_unwrap_transparently(self) -> None:
        """Audit events inside AKS records become k8s_audit events exactly as bare events would."""
        results = decode({"records": [record(EXEC_EVENT), record(DELETE_EVENT, category="kube-audit-admin")]})
        bare = decode([EXEC_EVENT, DELETE_EVENT])
        assert all(isinstance(result, Event) for result in results)
        assert [(e.type, e.ts_ns, e.payload, e.hostname) for e in results] == [  # type: ignore[union-attr]
            (e.type, e.ts_ns, e.payload, e.hostname) for e in bare]  # type: ignore[union-attr]
        assert [e.type for e in results] == ["create", "delete"]  # type: ignore[union-attr]

    def test_mixed_array_of_events_and_records(self) -> None:
        """An array mixing bare audit events and AKS records decodes both, keeping array indexes in errors."""
        broken = record(None, log="{oops")
        results = decode([DELETE_EVENT, record(EXEC_EVENT), broken])
        assert [type(result).__name__ for result in results] == ["Event", "Event", "DecodeError"]
        error = results[2]
        assert isinstance(error, DecodeError) and error.location is not None
        assert str(error).startswith("PT1H.json record '2': AKS 'properties.log' is not valid JSON")

    def test_bad_event_inside_record_is_reported_at_record_index(self) -> None:
        """An audit event inside a record with a bad stageTimestamp is rejected at the record's index."""
        late = copy.deepcopy(EXEC_EVENT)
        late["stageTimestamp"] = "2024-09-31T08:41:07.209731Z"
        results = decode({"records": [record(DELETE_EVENT), record(late)]})
        assert isinstance(results[0], Event)
        error = results[1]
        assert isinstance(error, DecodeError)
        assert error.message.startswith("malformed stageTimestamp") and "day 31 out of range" in error.message
        assert error.location == Location(file="PT1H.json", item_kind="record", item_name="1")

    def test_bad_records_value_is_a_document_error(self) -> None:
        """A forced decode of `{"records": <not an array>}` yields one document-level DecodeError."""
        [error] = decode({"records": 3})
        assert isinstance(error, DecodeError)
        assert error.location == Location(file="PT1H.json", item_kind="document")

    def test_storage_blob_lines_replay_through_recorded_files(self, tmp_path: Path) -> None:
        """A storage-account blob (one record per line) replays through the recorded-files reader."""
        blob = tmp_path / "PT1H.json"
        lines = [record(EXEC_EVENT), record(DELETE_EVENT, category="kube-audit-admin")]
        blob.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
        results = list(recorded_events([blob], [K8sAuditDecoder()]))
        assert [r.payload["auditID"] for r in results if isinstance(r, Event)] == [
            EXEC_EVENT["auditID"], DELETE_EVENT["auditID"]]
        assert not [r for r in results if isinstance(r, DecodeError)]

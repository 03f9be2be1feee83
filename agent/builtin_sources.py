"""The sources that ship with the agent, as the CLI and runtime plug them in (the one place naming them)."""

from __future__ import annotations

from agent.source import RecordDecoder, SourceSpec
from sources.cloudtrail.decoder import CloudTrailDecoder
from sources.cloudtrail.fields import cloudtrail_source
from sources.k8saudit.decoder import K8sAuditDecoder
from sources.k8saudit.fields import k8s_audit_source
from sources.kernel.fields import syscall_source


def builtin_source_specs() -> list[SourceSpec]:
    """Every built-in source, so that rules of any of them load."""
    return [syscall_source(), k8s_audit_source(), cloudtrail_source()]


def recorded_decoders(*, hostname: str) -> list[RecordDecoder]:
    """Decoders for recorded JSON input, in the order they are tried."""
    return [K8sAuditDecoder(hostname=hostname), CloudTrailDecoder(hostname=hostname)]

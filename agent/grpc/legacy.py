"""Falco's legacy gRPC API (`falco.outputs.service`, `falco.version.service`), wire-compatible.

Existing Falco clients keep working, with one deliberate difference: Falco fed all callers from
one shared queue, so each alert reached one of them; here `sub` fans every alert out to every
caller, live, without waiting for the client's request messages, and `get` returns the newest
retained alerts (up to a limit) instead of draining a queue. The legacy protocol cannot express
a gap: a legacy subscriber that falls behind loses alerts, which are counted and logged.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import structlog

from agent import __version__
from agent.grpc._gen.falco.outputs import outputs_pb2
from agent.grpc._gen.falco.version import version_pb2
from agent.grpc.filters import match_all
from agent.grpc.service import AlertHub, SubscriberSlots, bytes_out, open_lease
from agent.grpc.subscriptions import Gap

__all__ = ["LegacyOutputsApi", "LegacyVersionApi"]

log = structlog.get_logger(__name__)
OUTPUTS_SERVICE = outputs_pb2.DESCRIPTOR.services_by_name["service"].full_name
VERSION_SERVICE = version_pb2.DESCRIPTOR.services_by_name["service"].full_name


def _drain_requests(requests: Iterator[outputs_pb2.request]) -> None:
    """Read and ignore the client's request messages, so a client that keeps sending never stalls."""
    try:
        for _ in requests:
            pass
    except grpc.RpcError:
        pass  # the call ended; nothing to read any more


class LegacyOutputsApi:
    """`falco.outputs.service`: `sub` (bidirectional) and `get` (server streaming)."""

    def __init__(self, hub: AlertHub, slots: SubscriberSlots, *, get_limit: int = 1000) -> None:
        self._hub = hub
        self._slots = slots
        self._get_limit = get_limit
        self.missed = 0

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {
            "sub": grpc.stream_stream_rpc_method_handler(
                self.sub, request_deserializer=outputs_pb2.request.FromString, response_serializer=bytes_out),
            "get": grpc.unary_stream_rpc_method_handler(
                self.get, request_deserializer=outputs_pb2.request.FromString, response_serializer=bytes_out),
        }
        return grpc.method_handlers_generic_handler(OUTPUTS_SERVICE, methods)

    def sub(self, requests: Iterator[outputs_pb2.request], context: grpc.ServicerContext) -> Iterator[bytes]:
        sub, lease = open_lease(context, self._slots, self._hub, match_all)
        log.info("subscriber_connected", peer=context.peer(), api="falco.outputs")
        threading.Thread(target=_drain_requests, args=(requests,), name="legacy-sub-requests", daemon=True).start()
        try:
            for items in self._hub.stream(sub):
                for item in items:
                    if isinstance(item, Gap):
                        self.missed += item.missed
                        log.warning("legacy_subscriber_missed", peer=context.peer(), count=item.missed,
                                    first_seq=item.first_missed_seq, last_seq=item.last_missed_seq)
                        continue
                    yield item.legacy_bytes()
        finally:
            lease.release()

    def get(self, request: outputs_pb2.request, context: grpc.ServicerContext) -> Iterator[bytes]:
        for item in self._hub.recent(self._get_limit):
            yield item.legacy_bytes()


class LegacyVersionApi:
    """`falco.version.service`: the agent version in Falco's shape, and the rule engine version."""

    def __init__(self, *, engine_version: tuple[int, int, int] = (0, 0, 0)) -> None:
        core, _, build = __version__.partition("+")
        core, _, prerelease = core.partition("-")
        parts = [int(p) if p.isdigit() else 0 for p in [*core.split("."), "0", "0"][:3]]
        major, minor, patch = engine_version
        self._response = version_pb2.response(
            version=__version__, major=parts[0], minor=parts[1], patch=parts[2], prerelease=prerelease, build=build,
            engine_major=major, engine_minor=minor, engine_patch=patch, engine_version=f"{major}.{minor}.{patch}",
        )

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {
            "version": grpc.unary_unary_rpc_method_handler(
                self.version, request_deserializer=version_pb2.request.FromString,
                response_serializer=version_pb2.response.SerializeToString),
        }
        return grpc.method_handlers_generic_handler(VERSION_SERVICE, methods)

    def version(self, request: version_pb2.request, context: grpc.ServicerContext) -> version_pb2.response:
        return self._response

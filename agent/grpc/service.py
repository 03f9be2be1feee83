"""The `falco_agent.v1.AlertService` handlers: Subscribe, Get, Version.

Handlers are registered as generic handlers whose responses are already-serialized bytes:
fan-out serializes each alert once, and every subscriber's stream sends those same bytes.
The collaborators are the small protocols below, so the handlers know no concrete spool or hub.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Protocol

import grpc
import structlog

from agent import __version__
from agent.grpc._gen.falco_agent.v1 import alerts_pb2 as pb
from agent.grpc.convert import batch_response_bytes
from agent.grpc.filters import AlertPredicate, FilterError, compile_selection
from agent.grpc.subscriptions import Gap, Published, ResumeOutOfRange, Subscription

__all__ = ["MAX_BATCH_BYTES", "SERVICE_NAME", "AlertApi", "AlertHub", "SubscriberSlots", "bytes_out"]

log = structlog.get_logger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AlertService"].full_name
API_VERSION = "v1"
#: The most bytes of alerts one `AlertBatch` holds, whatever max_batch says. gRPC clients refuse a message over
#: 4 MiB unless told otherwise, and a batch its subscriber cannot take stops that stream for good: the client resumes
#: from the alert before it and is sent the same batch again.
MAX_BATCH_BYTES = 1024 * 1024


class AlertHub(Protocol):
    """Where handlers get alerts: live subscriptions and the spool behind them."""

    def subscribe(self, predicate: AlertPredicate) -> Subscription: ...

    def stream(self, sub: Subscription, *, resume_after: int | None = None) -> Iterator[list[Published | Gap]]: ...

    def check_resume(self, resume_after: int) -> None: ...

    def detach(self, sub: Subscription) -> None: ...

    def get(self, after_seq: int, limit: int, predicate: AlertPredicate) -> Iterator[Published]: ...

    def recent(self, count: int) -> Iterator[Published]: ...

    def retained_range(self) -> tuple[int, int]: ...


class SubscriberSlots(Protocol):
    """The limit on concurrent streaming subscribers, shared by both APIs."""

    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...


def bytes_out(data: bytes) -> bytes:
    """Response serializer for handlers that yield serialized messages."""
    return data


class Lease:
    """A subscriber slot and subscription released exactly once: on RPC end or generator close."""

    def __init__(self, slots: SubscriberSlots, hub: AlertHub, sub: Subscription) -> None:
        self._slots, self._hub, self._sub = slots, hub, sub
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._hub.detach(self._sub)
            self._slots.release()


def open_lease(context: grpc.ServicerContext, slots: SubscriberSlots, hub: AlertHub,
               predicate: AlertPredicate) -> tuple[Subscription, Lease]:
    """A subscription counted against the limit; aborts the RPC with RESOURCE_EXHAUSTED when full."""
    if not slots.try_acquire():
        log.warning("subscriber_refused", peer=context.peer(), reason="subscriber limit reached")
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "subscriber limit reached")
    sub = hub.subscribe(predicate)
    lease = Lease(slots, hub, sub)
    if not context.add_callback(lease.release):
        lease.release()  # the RPC already ended
    return sub, lease


def _packed(items: list[Published | Gap], max_batch: int) -> Iterator[bytes]:
    """Runs of consecutive alerts as `AlertBatch` responses of at most max_batch alerts and MAX_BATCH_BYTES (an
    alert larger than that goes alone); gaps between them."""
    run: list[bytes] = []
    size = 0
    for item in items:
        if item.__class__ is Gap:
            if run:
                yield _response(run)
                run, size = [], 0
            yield item.response_bytes()
            continue
        data = item.response_bytes()
        if run and size + len(data) > MAX_BATCH_BYTES:
            yield _response(run)
            run, size = [], 0
        run.append(data)
        size += len(data)
        if len(run) >= max_batch:
            yield _response(run)
            run, size = [], 0
    if run:
        yield _response(run)


def _response(run: list[bytes]) -> bytes:
    """One alert as `SubscribeResponse{alert}`, several as `SubscribeResponse{batch}`."""
    return run[0] if len(run) == 1 else batch_response_bytes(run)


class AlertApi:
    """Our API: filtered, resumable subscriptions over the shared fan-out."""

    def __init__(self, hub: AlertHub, slots: SubscriberSlots, *, max_get_limit: int = 10_000) -> None:
        self._hub = hub
        self._slots = slots
        self._max_get_limit = max_get_limit

    def handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                self.subscribe, request_deserializer=pb.SubscribeRequest.FromString, response_serializer=bytes_out),
            "Get": grpc.unary_stream_rpc_method_handler(
                self.get, request_deserializer=pb.GetRequest.FromString, response_serializer=bytes_out),
            "Version": grpc.unary_unary_rpc_method_handler(
                self.version, request_deserializer=pb.VersionRequest.FromString,
                response_serializer=pb.VersionResponse.SerializeToString),
        }
        return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)

    @staticmethod
    def _predicate(request: Any, context: grpc.ServicerContext) -> AlertPredicate:
        try:
            return compile_selection(request.allow_list, request.deny_list)
        except FilterError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # abort raises; this line only tells type checkers so

    def subscribe(self, request: pb.SubscribeRequest, context: grpc.ServicerContext) -> Iterator[bytes]:
        predicate = self._predicate(request, context)
        resume_after = request.resume_after if request.HasField("resume_after") else None
        if resume_after is not None:
            try:
                self._hub.check_resume(resume_after)
            except ResumeOutOfRange as exc:
                context.abort(grpc.StatusCode.OUT_OF_RANGE, str(exc))
        sub, lease = open_lease(context, self._slots, self._hub, predicate)
        log.info("subscriber_connected", peer=context.peer(), resume_after=resume_after,
                 filters=len(request.allow_list) + len(request.deny_list))
        max_batch = request.max_batch
        try:
            for items in self._hub.stream(sub, resume_after=resume_after):
                if max_batch <= 1:
                    for item in items:
                        yield item.response_bytes()
                else:
                    yield from _packed(items, max_batch)
        finally:
            lease.release()

    def get(self, request: pb.GetRequest, context: grpc.ServicerContext) -> Iterator[bytes]:
        predicate = self._predicate(request, context)
        limit = min(request.limit or self._max_get_limit, self._max_get_limit)
        for item in self._hub.get(request.after_seq, limit, predicate):
            yield item.alert_bytes

    def version(self, request: pb.VersionRequest, context: grpc.ServicerContext) -> pb.VersionResponse:
        first, last = self._hub.retained_range()
        return pb.VersionResponse(version=__version__, api_version=API_VERSION, first_seq=first, last_seq=last)

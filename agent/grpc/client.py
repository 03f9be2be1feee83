"""A Python client of the alert API: subscribe with filters, reconnect with backoff, resume by seq.

`AlertClient.subscribe` yields the agent's `Alert` objects (with `seq`) and `Gap`s. It remembers
the last sequence number it yielded and, after a lost connection or a server restart,
resubscribes with `resume_after` set to it, so the caller sees every alert once and in order.
With `fill_gaps` (the default), a gap caused by this client reading too slowly is filled from
the server's spool by resubscribing; only alerts the spool no longer holds surface as a `Gap`.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import grpc
import structlog

from agent.alert import Alert
from agent.grpc._gen.falco_agent.v1 import alerts_pb2 as pb
from agent.grpc._gen.falco_agent.v1 import alerts_pb2_grpc as pb_grpc
from agent.grpc.convert import proto_priority, proto_to_alert
from agent.grpc.subscriptions import Gap
from agent.grpc.tls import ClientTls
from agent.priority import Priority

__all__ = ["AlertClient", "Gap", "make_filter"]

log = structlog.get_logger(__name__)
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
                       grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.CANCELLED})


def make_filter(*, min_priority: Priority | None = None, sources: Iterable[str] = (), rules: Iterable[str] = (),
                tags_any: Iterable[str] = (), tags_all: Iterable[str] = ()) -> pb.AlertFilter:
    """One `AlertFilter`: every argument given must match (see alerts.proto for the semantics)."""
    return pb.AlertFilter(min_priority=proto_priority(min_priority) if min_priority is not None
                          else pb.PRIORITY_UNSPECIFIED,
                          sources=list(sources), rules=list(rules), tags_any=list(tags_any), tags_all=list(tags_all))


class AlertClient:
    """A connection to one agent by unix socket or `host:port` (plain, TLS or mutual TLS)."""

    def __init__(self, *, socket_path: str | os.PathLike[str] | None = None, address: str | None = None,
                 tls: ClientTls | None = None, backoff_initial_s: float = 0.1, backoff_max_s: float = 5.0,
                 keepalive_time_s: float = 30.0, call_timeout_s: float = 10.0) -> None:
        if (socket_path is None) == (address is None):
            raise ValueError("give exactly one of socket_path and address")
        self.target = f"unix:{os.fspath(socket_path)}" if socket_path is not None else str(address)
        options: list[tuple[str, Any]] = [("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
                                          ("grpc.keepalive_timeout_ms", 10_000)]
        if tls is not None:
            options += tls.channel_options()
            self._channel = grpc.secure_channel(self.target, tls.credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(self.target, options=options)
        self._stub = pb_grpc.AlertServiceStub(self._channel)
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._call_timeout_s = call_timeout_s
        self._closed = threading.Event()
        self.last_seq: int | None = None  # the last alert (or unfillable gap) handed to the caller
        self.reconnects = 0

    def version(self) -> pb.VersionResponse:
        response: pb.VersionResponse = self._stub.Version(pb.VersionRequest(), timeout=self._call_timeout_s)
        return response

    def get(self, *, after_seq: int = 0, limit: int = 0, allow: Iterable[pb.AlertFilter] = (),
            deny: Iterable[pb.AlertFilter] = ()) -> Iterator[Alert]:
        """Retained alerts after `after_seq`, oldest first, at most `limit` (0: the server's cap)."""
        request = pb.GetRequest(after_seq=after_seq, limit=limit, allow_list=list(allow), deny_list=list(deny))
        for msg in self._stub.Get(request, timeout=self._call_timeout_s):
            yield proto_to_alert(msg)

    def subscribe(self, *, allow: Iterable[pb.AlertFilter] = (), deny: Iterable[pb.AlertFilter] = (),
                  resume_after: int | None = None, fill_gaps: bool = True, reconnect: bool = True,
                  give_up_after_s: float | None = None, max_batch: int = 256) -> Iterator[Alert | Gap]:
        """Alerts passing the filters, live, from `resume_after` (None: from now) on, across reconnects.

        Ends when `close()` is called. Raises grpc.RpcError for errors that retrying cannot fix
        (bad filter, authentication), and for any error when `reconnect` is false or no
        connection succeeded for `give_up_after_s`.
        """
        allow_list, deny_list = list(allow), list(deny)
        cursor = resume_after
        unfillable_until = 0  # gaps starting at or before this seq come from the spool: yield them
        delay, failing_since = self._backoff[0], None
        while not self._closed.is_set():
            try:
                if cursor is None:
                    cursor = self.version().last_seq
                request = pb.SubscribeRequest(allow_list=allow_list, deny_list=deny_list, resume_after=cursor,
                                              max_batch=max_batch)
                call = self._stub.Subscribe(request)
                try:
                    for response in call:
                        delay, failing_since = self._backoff[0], None
                        kind = response.WhichOneof("event")
                        if kind != "gap":
                            for msg in (response.alert,) if kind == "alert" else response.batch.alerts:
                                alert = proto_to_alert(msg)
                                cursor = self.last_seq = alert.seq
                                yield alert
                            continue
                        gap = response.gap
                        if fill_gaps and gap.first_missed_seq > unfillable_until:
                            unfillable_until = gap.last_missed_seq
                            log.info("subscription_gap_filling", first_seq=gap.first_missed_seq,
                                     last_seq=gap.last_missed_seq, count=gap.missed)
                            break  # resubscribe from cursor: the spool replays what was missed
                        cursor = self.last_seq = max(cursor, gap.last_missed_seq)
                        yield Gap(gap.missed, gap.first_missed_seq, gap.last_missed_seq)
                    else:
                        log.info("subscription_ended_by_server", target=self.target, last_seq=cursor)
                        self.reconnects += 1
                        self._pause(delay)
                        delay = min(delay * 2, self._backoff[1])
                finally:
                    call.cancel()
            except grpc.RpcError as exc:
                code = exc.code()
                if self._closed.is_set():
                    return
                if code == grpc.StatusCode.OUT_OF_RANGE and cursor:
                    log.warning("subscription_resume_out_of_range", resume_after=cursor,
                                reason="the agent has not issued this number: new spool? replaying all it holds")
                    cursor = 0
                    continue
                if not reconnect or code not in RETRYABLE:
                    raise
                now = time.monotonic()
                failing_since = failing_since or now
                if give_up_after_s is not None and now - failing_since > give_up_after_s:
                    raise
                log.warning("subscription_reconnecting", target=self.target, code=code.name, resume_after=cursor,
                            delay_s=round(delay, 3))
                self.reconnects += 1
                self._pause(delay)
                delay = min(delay * 2, self._backoff[1])

    def _pause(self, delay_s: float) -> None:
        self._closed.wait(delay_s * random.uniform(0.5, 1.0))

    def close(self) -> None:
        """End any subscription in progress and release the channel."""
        self._closed.set()
        self._channel.close()

    def __enter__(self) -> AlertClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""`k8saudit-eks`: the audit log of an EKS cluster, read from CloudWatch Logs, as events of the `k8s_audit` source.

EKS clusters cannot send their audit log to a webhook; with the `audit` control plane log type enabled, EKS writes it
to CloudWatch Logs. This plugin, on the public plugin API alone, mirrors Falco's plugin of that name: its
`init_config` keys `region`, `profile`, `shift`, `polling_interval` and `buffer_size`, and its `open_params`, the
cluster name. It adds a live input to `k8s_audit` (an `inputs_only` plugin): the k8s audit source's fields and the
upstream k8s audit rules apply to its events.

The input polls `FilterLogEvents` on `/aws/eks/<cluster>/cluster`, streams `kube-apiserver-audit*`, every
`polling_interval` seconds, through every page; each page (at most `buffer_size` log events) is decoded by the k8s
audit decoder and handed over as one batch. The batch's `on_done` writes the checkpoint (eks_logs.Marks) once that
batch and every earlier one were evaluated, so that a restart reads only what was not: at least once, and a batch
evaluated when the agent died before its checkpoint was written is evaluated again. A failed call (throttling
included, once botocore's own retries gave up) is counted, logged and retried after a capped exponential backoff
with jitter, from the marks of the last batch handed over. A log event that is no audit event (invalid or truncated
JSON...) is skipped, counted and logged with its stream and event id.

Without a checkpoint, reading starts `shift` seconds before the input first starts. Events CloudWatch ingests with
a timestamp older than what was already read of their stream, or a new stream's events older than the oldest known
stream's mark (or a horizon of eks_logs.STREAM_HORIZON_MS), are not read.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import structlog

from agent.atomic_file import prepare_folder
from agent.plugins.api import (
    AgentError,
    DecodeError,
    Event,
    EventSink,
    LiveContext,
    LiveSource,
    Location,
    Plugin,
    SourceWorker,
    Stopped,
    WorkerSource,
    limits,
)
from sources.cloudtrail.aws import (
    AWS_ERRORS,
    AwsSettings,
    backoff_s,
    describe,
    is_throttling,
    make_client,
    make_session,
)
from sources.k8saudit.checkpoint import CheckpointWriter
from sources.k8saudit.decoder import SOURCE_NAME, K8sAuditDecoder
from sources.k8saudit.eks_logs import Marks, Reading, audit_pages, load_marks, log_group, write_marks

log = structlog.get_logger(__name__)

PLUGIN_NAME = "k8saudit-eks"
#: The suffix CloudWatch Logs gives a message it cut at its size limit.
TRUNCATED_SUFFIX = "[Truncated...]"
#: EKS cluster names: a letter or digit, then letters, digits, '-' and '_', at most 100 characters.
_CLUSTER_NAME = re.compile(r"[0-9A-Za-z][A-Za-z0-9_-]{0,99}")
_MS_PER_S = 1000


@dataclass(frozen=True, slots=True)
class EksConfig:
    """init_config of k8saudit-eks: Falco's keys, then the agent's AWS and checkpoint settings."""

    #: The cluster's region; empty: boto3's (AWS_REGION, AWS_DEFAULT_REGION, the profile's).
    region: str = ""
    #: The AWS profile; empty: boto3's credential chain (AWS_PROFILE, instance or pod role...).
    profile: str = ""
    #: Seconds before the first start that reading begins at, when there is no checkpoint.
    shift: float = field(default=1.0, metadata=limits(ge=0))
    #: Seconds between two polls that found nothing more.
    polling_interval: float = field(default=5.0, metadata=limits(gt=0))
    #: Log events per FilterLogEvents call, and so at most per batch (CloudWatch's limit: 10000).
    buffer_size: int = field(default=1000, metadata=limits(ge=1, le=10000))
    #: A role to assume for the calls.
    role_arn: str = ""
    #: Another CloudWatch Logs endpoint (a VPC endpoint, a test server).
    endpoint_url: str = ""
    #: Where the marks of what was evaluated are kept; empty: none (a restart reads from `shift` again).
    checkpoint_path: str = ""


def decode_log_event(decoder: K8sAuditDecoder, origin: str, event_id: str, message: str) -> list[Event | DecodeError]:
    """The k8s audit events of one log event's message, and a DecodeError naming `origin` (the group and stream)
    and the event id for what is wrong with it."""
    where = Location(file=origin, item_kind="log event", item_name=event_id)
    if message.endswith(TRUNCATED_SUFFIX):
        return [DecodeError("CloudWatch Logs truncated the message at its size limit", where, reason="truncated")]
    try:
        document = orjson.loads(message)
    except orjson.JSONDecodeError as err:
        return [DecodeError(f"invalid JSON: {err}", where, reason="invalid_json")]
    if not decoder.matches(document):
        return [DecodeError("not a Kubernetes audit event", where, reason="not_audit_event")]
    return [item if isinstance(item, Event) else DecodeError(item.message, where, reason=item.reason)
            for item in decoder.events(document, origin=origin)]


def logs_client(aws: AwsSettings) -> Any:
    """A CloudWatch Logs client (botocore retries throttled calls a few times itself)."""
    return make_client(make_session(aws), "logs", aws)


class EksAuditLogs(WorkerSource):
    """LiveSource polling one EKS cluster's audit log in CloudWatch Logs; see the module docstring.

    `connect` builds the CloudWatch Logs client and `backoff` the wait after the n-th failed poll in a row.
    """

    name = SOURCE_NAME

    def __init__(self, *, cluster: str, aws: AwsSettings, hostname: str = "", buffer_size: int = 1000,
                 polling_interval_s: float = 5.0, shift_s: float = 1.0, checkpoint_path: Path | None = None,
                 connect: Callable[[AwsSettings], Any] = logs_client,
                 backoff: Callable[[int], float] = backoff_s) -> None:
        self.log_group = log_group(cluster)
        self._aws = aws
        self._buffer_size = buffer_size
        self._polling_interval_s = polling_interval_s
        self._shift_ms = int(shift_s * _MS_PER_S)
        self._connect = connect
        self._backoff = backoff
        self._decoder = K8sAuditDecoder(hostname=hostname)
        self._checkpoint = CheckpointWriter[Marks](checkpoint_path, partial(write_marks, self.log_group))
        self._worker = SourceWorker(PLUGIN_NAME, join_timeout_s=10.0)
        self._stopping = self._worker.stopping
        self._sink: EventSink | None = None
        self._client: Any = None
        #: The marks of the last batch handed over (None before the first): where a restart goes on.
        self._sent: Marks | None = None
        self._reading = Reading(Marks(0, {}))
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()

    # --- LiveSource -------------------------------------------------------------------------------------------

    def start(self, sink: EventSink) -> None:
        """Go on after the last batch handed over, else at the checkpoint, else `shift` before now."""
        self._worker.check_idle()
        path = self._checkpoint.path
        if path is not None:
            prepare_folder(path)
        marks = self._sent or (load_marks(path, self.log_group) if path is not None else None)
        self._reading = Reading(marks or Marks(int(time.time() * _MS_PER_S) - self._shift_ms, {}))
        try:
            self._client = self._connect(self._aws)
        except AWS_ERRORS as exc:
            raise AgentError(f"cannot create a CloudWatch Logs client: {describe(exc)}",
                             Location(file=self.log_group)) from None
        self._sink = sink
        self._worker.start(self._run)

    def metrics(self) -> dict[str, Any]:
        counters: dict[str, Any] = {key: self._counts[key] for key in (
            "polls", "pages", "log_events_read", "log_events_already_read", "events", "aws_errors", "throttled")}
        counters.update({f"rejected_{reason}": count for reason, count in self._rejected.items()})
        counters["streams"] = len(self._reading)
        counters["checkpoint_writes"] = self._checkpoint.writes
        counters["checkpoint_write_failures"] = self._checkpoint.write_failures
        return counters

    # --- poller thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        try:
            while True:
                try:
                    self._poll()
                except AWS_ERRORS as exc:
                    failures += 1
                    delay_s = self._backoff(failures)
                    self._failed(exc, delay_s)
                else:
                    failures, delay_s = 0, self._polling_interval_s
                if self._stopping.wait(delay_s):
                    return
        except Stopped:
            pass

    def _failed(self, exc: Exception, delay_s: float) -> None:
        self._counts["aws_errors"] += 1
        self._counts["throttled"] += is_throttling(exc)
        log.warning("aws_call_failed", service="logs", operation="filter_log_events", log_group=self.log_group,
                    error=describe(exc), retry_in_s=round(delay_s, 3))

    def _poll(self) -> None:
        """Read every page from the oldest stream's mark on, handing each over as it comes."""
        self._counts["polls"] += 1
        for page in audit_pages(self._client, self.log_group, start_ms=self._reading.floor_ms(),
                                limit=self._buffer_size):
            if self._stopping.is_set():
                raise Stopped
            self._counts["pages"] += 1
            self._hand_over([event for record in page for event in self._take(record)])

    def _take(self, record: dict[str, Any]) -> list[Event]:
        """The events of one log event not read before, which is marked read; rejections counted and logged."""
        stream, timestamp_ms, event_id = str(record["logStreamName"]), int(record["timestamp"]), str(record["eventId"])
        if self._reading.is_read(stream, timestamp_ms, event_id):
            self._counts["log_events_already_read"] += 1
            return []
        self._reading.add(stream, timestamp_ms, event_id)
        self._counts["log_events_read"] += 1
        events: list[Event] = []
        for item in decode_log_event(self._decoder, f"{self.log_group}/{stream}", event_id,
                                     str(record.get("message", ""))):
            if isinstance(item, Event):
                events.append(item)
                continue
            self._rejected[item.reason] += 1
            log.warning("eks_audit_event_rejected", log_group=self.log_group, stream=stream, event_id=event_id,
                        reason=item.reason, detail=item.message)
        self._counts["events"] += len(events)
        return events

    def _hand_over(self, events: list[Event]) -> None:
        """Put a page's events (none: only to save progress) with an on_done that checkpoints the marks they reach."""
        marks = self._reading.snapshot()
        if not events and marks == self._sent:
            return
        assert self._sink is not None
        self._checkpoint.hand_over(self._sink, events, marks, self._stopping)
        self._sent = marks


def _live(config: EksConfig, context: LiveContext) -> list[LiveSource]:
    cluster = context.open_params.strip()
    if not _CLUSTER_NAME.fullmatch(cluster):
        raise AgentError(f"{PLUGIN_NAME}: open_params must be the EKS cluster's name (its audit log is read from "
                         f"{log_group('CLUSTER')}), not {cluster!r}")
    aws = AwsSettings(region=config.region, profile=config.profile, role_arn=config.role_arn,
                      endpoint_url=config.endpoint_url)
    return [EksAuditLogs(cluster=cluster, aws=aws, hostname=context.hostname, buffer_size=config.buffer_size,
                         polling_interval_s=config.polling_interval, shift_s=config.shift,
                         checkpoint_path=Path(config.checkpoint_path) if config.checkpoint_path else None)]


#: Its version is that of Falco's plugin whose keys and behaviour it mirrors, as rules' required_plugin_versions name.
PLUGIN = Plugin(name=PLUGIN_NAME, version="0.12.0", config=EksConfig, source=SOURCE_NAME, inputs_only=True,
                live=_live)

"""Poll a CloudTrail bucket for new log objects and feed their records to the sink, each object once.

Trails are found by listing with a delimiter: `<prefix>AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/` and
the organisation layout `<prefix>AWSLogs/<org-id>/<account>/CloudTrail/<region>/YYYY/MM/DD/`; the account,
region and start-date filters apply while discovering, so filtered prefixes are never listed.

Exactly once across restarts: within a day prefix CloudTrail's keys sort in time order. Per day the
checkpoint holds `after`, the highest key such that it and every key before it were acknowledged (the next
listing's StartAfter), and `done`, the keys after it already acknowledged. Keys listed but not acknowledged
(downloading, queued, failed) are `pending` and hold `after` back, so concurrent downloads finishing out of
order neither lose nor repeat an object.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from agent.atomic_file import prepare_folder, read_state
from agent.errors import AgentError
from agent.location import Location
from agent.source import EventSink
from agent.source_worker import SourceWorker, Stopped, WorkerSource
from sources.cloudtrail.aws import AWS_ERRORS, AwsSettings, make_client, make_session
from sources.cloudtrail.checkpoint import FORMAT_VERSION, CheckpointWriter, ReadTally, hand_over
from sources.cloudtrail.decoder import SOURCE, CloudTrailDecoder
from sources.cloudtrail.objects import DEFAULT_LIMITS, ObjectLimits, read_s3_object

log = structlog.get_logger(__name__)

LOG_SUFFIXES = (".json.gz", ".json")
#: Days before the newest listed day that are still listed on every poll, for files delivered late.
LOOKBACK_DAYS = 1
_WAIT_S = 0.1
#: Consecutive failed polls double the wait up to this many times.
_MAX_BACKOFF_STEPS = 5
_MAX_BACKOFF_S = 300.0
#: Frozen, so one instance can be the default of every poller: boto3's own region and credential chain.
DEFAULT_AWS = AwsSettings()


@dataclass(slots=True)
class _DayProgress:
    """Progress in one day prefix; `after` and `done` are persisted, `pending` and `active` are not."""

    after: str = ""
    done: set[str] = field(default_factory=set)
    #: Listed and not acknowledged: downloading, queued, failed. The lowest one holds `after` back.
    pending: set[str] = field(default_factory=set)
    #: Pending keys being worked on now; a pending key not active failed and is retried on the next listing.
    active: set[str] = field(default_factory=set)

    def compact(self) -> None:
        """Move `after` past every done key below the lowest pending one."""
        floor = min(self.pending) if self.pending else None
        below = [key for key in self.done if floor is None or key < floor]
        if below:
            self.after = max(self.after, *below)
            self.done.difference_update(below)

    @property
    def is_settled(self) -> bool:
        return not self.pending and not self.done


def _day_of(day_prefix: str) -> date | None:
    """The date of `.../YYYY/MM/DD/`, or None when the prefix does not end in one."""
    try:
        year, month, day = day_prefix.rstrip("/").rsplit("/", 3)[1:]
        return date(int(year), int(month), int(day))
    except ValueError:
        return None


class S3TrailPoller(WorkerSource):
    """LiveSource polling an S3 bucket of CloudTrail logs; one poller thread lists, `concurrency` threads fetch.

    With `follow` it polls every `poll_interval_s` (longer after S3 errors); without it, it reads what is
    there once and ends (see `wait_finished`).
    """

    name = SOURCE

    def __init__(self, *, bucket: str, prefix: str = "", accounts: Sequence[str] = (), regions: Sequence[str] = (),
                 start_date: date | None = None, poll_interval_s: float = 60.0, concurrency: int = 4,
                 checkpoint_path: Path | None = None, aws: AwsSettings = DEFAULT_AWS, hostname: str = "",
                 follow: bool = True, limits: ObjectLimits = DEFAULT_LIMITS) -> None:
        self._bucket = bucket
        self._root = f"{prefix.rstrip('/')}/AWSLogs/" if prefix.strip("/") else "AWSLogs/"
        self._accounts = frozenset(accounts)
        self._regions = frozenset(regions)
        self._start_date = start_date
        self._poll_interval_s = poll_interval_s
        self._concurrency = max(1, concurrency)
        self._checkpoint_path = checkpoint_path
        # One client is shared by the download threads; its pool must hold a connection per thread plus the lister.
        self._aws = dataclasses.replace(aws, max_pool_connections=max(aws.max_pool_connections,
                                                                      self._concurrency + 1))
        self._hostname = hostname
        self._follow = follow
        self._limits = limits
        self._lock = threading.Lock()
        self._days: dict[str, _DayProgress] = {}
        self._checkpoint = CheckpointWriter(checkpoint_path, self._snapshot)
        self._tally = ReadTally()
        self._s3_errors = 0
        self._polls = 0
        self._worker = SourceWorker("cloudtrail-s3", join_timeout_s=10.0)
        self._stopping = self._worker.stopping
        self._slots = threading.Semaphore(2 * self._concurrency)
        self._sink: EventSink | None = None
        self._client: Any = None

    # --- LiveSource -------------------------------------------------------------------------------------------

    def start(self, sink: EventSink) -> None:
        """Load the checkpoint, build the S3 client and start polling."""
        self._worker.check_idle()
        if self._checkpoint_path is not None:
            prepare_folder(self._checkpoint_path)
            self._load(self._checkpoint_path)
        try:
            self._client = make_client(make_session(self._aws), "s3", self._aws)
        except AWS_ERRORS as err:
            raise AgentError(f"cannot reach AWS: {err}", Location(file=f"s3://{self._bucket}")) from err
        self._sink = sink
        self._worker.start(self._run)

    def metrics(self) -> dict[str, Any]:
        metrics = self._tally.as_metrics()
        with self._lock:
            metrics["objects_pending"] = sum(len(day.pending) for day in self._days.values())
        metrics["s3_errors"] = self._s3_errors
        metrics["polls"] = self._polls
        metrics["checkpoint_writes"] = self._checkpoint.writes
        metrics["checkpoint_write_failures"] = self._checkpoint.write_failures
        return metrics

    # --- checkpoint -------------------------------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        document = read_state(path, version=FORMAT_VERSION)
        if not document:
            return
        if document.get("bucket") != self._bucket:
            log.warning("checkpoint_ignored", file=str(path), reason=f"made for bucket {document.get('bucket')!r}")
            return
        days = document.get("days")
        if not isinstance(days, dict):
            log.warning("checkpoint_ignored", file=str(path), reason="no 'days' object")
            return
        for day_prefix, entry in days.items():
            try:
                after, done = entry["after"], entry["done"]
                if not isinstance(after, str) or not all(isinstance(key, str) for key in done):
                    raise TypeError("keys are not strings")
            except (KeyError, TypeError) as err:
                log.warning("checkpoint_entry_ignored", file=str(path), prefix=day_prefix, reason=repr(err))
                continue
            self._days[day_prefix] = _DayProgress(after=after, done=set(done))

    def _snapshot(self) -> dict[str, Any]:
        with self._lock:
            days = {prefix: {"after": day.after, "done": sorted(day.done)} for prefix, day in self._days.items()}
        return {"bucket": self._bucket, "days": days}

    def _mark_done(self, day_prefix: str, key: str) -> None:
        with self._lock:
            day = self._days[day_prefix]
            day.pending.discard(key)
            day.active.discard(key)
            day.done.add(key)
            day.compact()

    # --- poller thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        failed_polls = 0
        executor = ThreadPoolExecutor(self._concurrency, thread_name_prefix="cloudtrail-s3-get")
        try:
            while not self._stopping.is_set():
                failed_polls = 0 if self._poll(executor) else failed_polls + 1
                self._polls += 1
                if not self._follow:
                    break
                delay_s = min(self._poll_interval_s * 2 ** min(failed_polls, _MAX_BACKOFF_STEPS),
                              max(self._poll_interval_s, _MAX_BACKOFF_S))
                if self._stopping.wait(delay_s):
                    break
        except Stopped:
            pass
        finally:
            executor.shutdown(wait=True, cancel_futures=self._stopping.is_set())

    def _s3_error(self, err: Exception, operation: str, where: str) -> None:
        with self._lock:
            self._s3_errors += 1
        log.warning("cloudtrail_s3_error", operation=operation, object=f"s3://{self._bucket}/{where}",
                    reason=str(err))

    def _poll(self, executor: ThreadPoolExecutor) -> bool:
        """List every trail once and submit its new objects; False when an S3 call failed."""
        is_ok = True
        try:
            trails = list(self._trails())
        except AWS_ERRORS as err:
            self._s3_error(err, "list_objects_v2", self._root)
            return False
        for trail in trails:
            try:
                for day_prefix in self._day_prefixes(trail):
                    self._list_day(day_prefix, executor)
            except AWS_ERRORS as err:
                self._s3_error(err, "list_objects_v2", trail)
                is_ok = False
            self._forget_settled(trail)
        return is_ok

    def _children(self, prefix: str) -> list[str]:
        """The names of the "folders" directly under `prefix`, in key order."""
        names: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", ()):
                names.append(common["Prefix"][len(prefix):].rstrip("/"))
        return names

    def _trails(self) -> Iterator[str]:
        """`.../CloudTrail/<region>/` prefixes of the wanted accounts and regions, in both layouts."""
        for name in self._children(self._root):
            if name.startswith("o-"):
                accounts = [f"{self._root}{name}/{account}/" for account in self._children(f"{self._root}{name}/")]
            else:
                accounts = [f"{self._root}{name}/"]
            for account_prefix in accounts:
                account = account_prefix.rstrip("/").rsplit("/", 1)[1]
                if self._accounts and account not in self._accounts:
                    continue
                for region in self._children(f"{account_prefix}CloudTrail/"):
                    if not self._regions or region in self._regions:
                        yield f"{account_prefix}CloudTrail/{region}/"

    def _floor(self, trail: str) -> date | None:
        """The first day of `trail` to list: the oldest day still in the checkpoint, else the start date."""
        with self._lock:
            known = [d for prefix in self._days if prefix.startswith(trail) and (d := _day_of(prefix)) is not None]
        floor = min(known, default=None)
        if self._start_date is not None and (floor is None or floor < self._start_date):
            floor = self._start_date
        return floor

    def _day_prefixes(self, trail: str) -> Iterator[str]:
        """`trail`'s YYYY/MM/DD/ prefixes from its floor on, oldest first; earlier years and months are not listed."""
        floor = self._floor(trail)
        for year in self._children(trail):
            if not year.isdigit() or (floor is not None and int(year) < floor.year):
                continue
            for month in self._children(f"{trail}{year}/"):
                if not month.isdigit() or (floor is not None and (int(year), int(month)) < (floor.year, floor.month)):
                    continue
                for day in self._children(f"{trail}{year}/{month}/"):
                    day_prefix = f"{trail}{year}/{month}/{day}/"
                    when = _day_of(day_prefix)
                    if when is not None and (floor is None or when >= floor):
                        yield day_prefix

    def _list_day(self, day_prefix: str, executor: ThreadPoolExecutor) -> None:
        """Submit the keys of a day not yet done nor in hand, in key order; forget failed keys that vanished."""
        with self._lock:
            day = self._days.setdefault(day_prefix, _DayProgress())
            start_after = day.after
        listed: set[str] = set()
        options = {"Bucket": self._bucket, "Prefix": day_prefix}
        if start_after:
            options["StartAfter"] = start_after
        for page in self._client.get_paginator("list_objects_v2").paginate(**options):
            for item in page.get("Contents", ()):
                key = item["Key"]
                if not key.endswith(LOG_SUFFIXES):
                    continue  # e.g. a folder marker; it never becomes pending, so it holds nothing back
                listed.add(key)
                with self._lock:
                    if key in day.done or key in day.active:
                        continue
                    day.pending.add(key)
                    day.active.add(key)
                self._submit(executor, day_prefix, key)
        with self._lock:
            # A key that failed to download and is no longer listed was deleted: it must not hold `after` back.
            vanished = {key for key in day.pending - day.active if key not in listed}
            if vanished:
                day.pending -= vanished
                day.compact()

    def _submit(self, executor: ThreadPoolExecutor, day_prefix: str, key: str) -> None:
        """Hand a key to a download thread once one of a bounded number of slots is free."""
        while not self._slots.acquire(timeout=_WAIT_S):
            if self._stopping.is_set():
                raise Stopped
        if self._stopping.is_set():
            self._slots.release()
            raise Stopped
        executor.submit(self._fetch, day_prefix, key)

    def _forget_settled(self, trail: str) -> None:
        """Drop the oldest fully done days of `trail` past the lookback, so listing and checkpoint stay short.

        Only a run of days from the oldest on is dropped: the oldest day left is where listing starts.
        """
        with self._lock:
            days = sorted((when, prefix) for prefix in self._days
                          if prefix.startswith(trail) and (when := _day_of(prefix)) is not None)
            if not days:
                return
            keep_from = days[-1][0] - timedelta(days=LOOKBACK_DAYS)
            for when, prefix in days:
                if when >= keep_from or not self._days[prefix].is_settled:
                    break
                del self._days[prefix]

    # --- download threads -------------------------------------------------------------------------------------

    def _fetch(self, day_prefix: str, key: str) -> None:
        """Download, decode and hand over one object; on any failure the key stays pending for the next poll."""
        is_handed_over = False
        try:
            decoder = CloudTrailDecoder(hostname=self._hostname)
            try:
                decoded = read_s3_object(self._client, self._bucket, key, decoder=decoder, limits=self._limits)
            except AWS_ERRORS as err:
                self._s3_error(err, "get_object", key)
                return
            self._tally.count(decoded, decoder)
            # A rejected (corrupt, too large) object goes over as an empty batch: acknowledged, it is done and not
            # retried forever.
            on_done = partial(self._checkpoint.acknowledge, partial(self._mark_done, day_prefix, key))
            assert self._sink is not None
            is_handed_over = hand_over(self._sink, decoded.events, on_done, self._stopping)
        except Exception:
            log.exception("cloudtrail_object_failed", object=f"s3://{self._bucket}/{key}")
        finally:
            if not is_handed_over:
                with self._lock:
                    self._days[day_prefix].active.discard(key)
            self._slots.release()

"""Noise control between the engine and the outputs: per-rule rate limits and dedup windows that fold, never drop.

Each policy applies to the rules whose name matches its glob (`fnmatch` syntax, case-sensitive; the first matching
policy wins). An alert a policy holds back is *folded*: counted into one pending summary per (rule, key), where the
key is the rule name plus the values of the policy's chosen output fields (`None` when the rule's output lacks the
field). A summary is an `Alert` with the rule name unchanged (so routing and subscriptions by rule still match),
the same priority, source, hostname and tags, and `output_fields` holding the key fields plus `suppressed.count`,
`suppressed.first_time` and `suppressed.last_time` (event times in ns, like `evt.time`) and `suppressed.reason`
(`dedup` or `rate`). Invariant: alerts admitted + the counts of all summaries == alerts offered, once `flush` ran.

- dedup: the first alert of a key passes and opens a window of `window_s`; repeats inside it are folded, and the
  summary is due when the window closes. The next alert after the window opens a new one and passes.
- rate: a token bucket of `alerts` tokens refilled at `alerts / per_s` per second, per key. Without a token the
  alert is folded; its summary is due `per_s` after the first fold. With both, dedup runs first.

Windows run on the agent's clock (`time.monotonic` by default), not on event times, so that replayed old events
are still limited. State for a key is forgotten once its window closed or its bucket is full again. Not
thread-safe: call every method from the engine thread.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from agent.alert import Alert
from agent.config.schema import DedupConfig, NoisePolicyConfig, RateLimitConfig
from agent.errors import ConfigError
from agent.generic_fields import format_iso8601

__all__ = ["NoiseFilter"]

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
Reason = Literal["dedup", "rate"]
_Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Policy:
    """One `noise.rules` entry with its glob compiled."""

    pattern: re.Pattern[str]
    rate: RateLimitConfig | None
    dedup: DedupConfig | None


@dataclass(slots=True)
class _Fold:
    """Repeats of one (rule, key) held back until `due_s`; `count` may stay 0 for a dedup window."""

    reason: Reason
    key: _Key
    key_fields: tuple[str, ...]
    due_s: float
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    last: Alert | None = None
    is_closed: bool = False

    def add(self, alert: Alert) -> None:
        if self.last is None:
            self.first_ns = self.last_ns = alert.ts_ns
        else:  # events from several sources or files may arrive slightly out of order
            self.first_ns = min(self.first_ns, alert.ts_ns)
            self.last_ns = max(self.last_ns, alert.ts_ns)
        self.last = alert
        self.count += 1


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_s: float


@dataclass(slots=True)
class _State:
    """Everything keyed per (rule, key); kept together so `flush` can empty it in one place."""

    windows: dict[_Key, _Fold] = field(default_factory=dict)
    rate_folds: dict[_Key, _Fold] = field(default_factory=dict)
    buckets: dict[_Key, _Bucket] = field(default_factory=dict)
    due: list[tuple[float, int, _Fold]] = field(default_factory=list)


def _compile(policies: Iterable[NoisePolicyConfig]) -> list[_Policy]:
    compiled = []
    for i, policy in enumerate(policies):
        where = f"noise.rules[{i}]"
        if not policy.match:
            raise ConfigError(f"{where}.match: a rule name or glob is required")
        if policy.rate is None and policy.dedup is None:
            raise ConfigError(f"{where}: give `rate`, `dedup` or both")
        if policy.rate is not None and (policy.rate.alerts < 1 or policy.rate.per_s <= 0):
            raise ConfigError(f"{where}.rate: `alerts` must be at least 1 and `per_s` above 0")
        if policy.dedup is not None and policy.dedup.window_s <= 0:
            raise ConfigError(f"{where}.dedup.window_s: must be above 0")
        pattern = re.compile(fnmatch.translate(policy.match))
        compiled.append(_Policy(pattern, policy.rate, policy.dedup))
    return compiled


class NoiseFilter:
    """Decides per alert whether it goes out now, and produces the summaries of what it held back."""

    def __init__(self, policies: Iterable[NoisePolicyConfig], *, clock: Clock = time.monotonic) -> None:
        self._policies = _compile(policies)
        self._clock = clock
        self._by_rule: dict[str, _Policy | None] = {}
        self._state = _State()
        self._ready: list[Alert] = []
        self._order = itertools.count()
        self._next_gc_s = 0.0
        self._gc_every_s = min((p.rate.per_s for p in self._policies if p.rate), default=60.0)
        self.admitted = 0
        self.suppressed = 0
        self.summaries = 0

    @property
    def is_active(self) -> bool:
        """False when no policy is configured, so the runtime can skip the filter entirely."""
        return bool(self._policies)

    def counters(self) -> dict[str, int]:
        """admitted, suppressed and summaries so far, and the (rule, key) entries held, for the metrics endpoint."""
        state = self._state
        return {"admitted": self.admitted, "suppressed": self.suppressed, "summaries": self.summaries,
                "keys": len(state.windows) + len(state.rate_folds) + len(state.buckets)}

    def admit(self, alert: Alert) -> bool:
        """True: pass the alert on now. False: it was folded into a pending summary (never lost)."""
        policy = self._policy_for(alert.rule)
        if policy is None:
            self.admitted += 1
            return True
        now = self._clock()
        if policy.dedup is not None and not self._admit_dedup(policy.dedup, alert, now):
            self.suppressed += 1
            return False
        if policy.rate is not None and not self._admit_rate(policy.rate, alert, now):
            self.suppressed += 1
            return False
        self.admitted += 1
        return True

    def next_due_s(self) -> float | None:
        """Clock time at which the earliest pending summary is due, or None; the engine may sleep until then."""
        if self._ready:
            return self._clock()
        due = self._state.due
        return due[0][0] if due else None

    def due_summaries(self, now: float | None = None) -> list[Alert]:
        """Summaries of the windows closed by `now` (clock seconds; the clock's time when omitted)."""
        now = self._clock() if now is None else now
        ready, self._ready = self._ready, []
        due = self._state.due
        while due and due[0][0] <= now:
            _, _, fold = heapq.heappop(due)
            self._close(fold, ready)
        if now >= self._next_gc_s:
            self._forget_full_buckets(now)
            self._next_gc_s = now + self._gc_every_s
        self.summaries += len(ready)
        return ready

    def flush(self) -> list[Alert]:
        """Summaries of everything held back, due or not (at shutdown); the filter starts afresh afterwards."""
        ready, self._ready = self._ready, []
        for _, _, fold in sorted(self._state.due):
            self._close(fold, ready)
        self._state = _State()
        self.summaries += len(ready)
        if ready:
            log.info("noise_summaries_flushed", count=len(ready))
        return ready

    # ----- internals -------------------------------------------------------------------------------
    def _policy_for(self, rule: str) -> _Policy | None:
        try:
            return self._by_rule[rule]
        except KeyError:
            pass
        found = None
        for policy in self._policies:
            if policy.pattern.match(rule):
                found = policy
                break
        self._by_rule[rule] = found
        return found

    def _admit_dedup(self, dedup: DedupConfig, alert: Alert, now: float) -> bool:
        key = _key(alert, dedup.fields, 0)
        windows = self._state.windows
        window = windows.get(key)
        if window is not None and now < window.due_s:
            window.add(alert)
            return False
        if window is not None:  # closed on the clock but not yet swept by due_summaries
            self._close(window, self._ready)
        windows[key] = self._open("dedup", key, dedup.fields, now + dedup.window_s)
        return True

    def _admit_rate(self, rate: RateLimitConfig, alert: Alert, now: float) -> bool:
        key = _key(alert, rate.fields, 1)
        buckets = self._state.buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = _Bucket(float(rate.alerts), now)
        else:
            refill = (now - bucket.updated_s) * rate.alerts / rate.per_s
            bucket.tokens = min(float(rate.alerts), bucket.tokens + refill)
            bucket.updated_s = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        folds = self._state.rate_folds
        fold = folds.get(key)
        if fold is not None and now >= fold.due_s:
            self._close(fold, self._ready)
            fold = None
        if fold is None:
            fold = folds[key] = self._open("rate", key, rate.fields, now + rate.per_s)
        fold.add(alert)
        return False

    def _open(self, reason: Reason, key: _Key, fields: tuple[str, ...], due_s: float) -> _Fold:
        fold = _Fold(reason, key, fields, due_s)
        heapq.heappush(self._state.due, (due_s, next(self._order), fold))
        return fold

    def _close(self, fold: _Fold, into: list[Alert]) -> None:
        """Turn a fold into its summary (if it held anything) and forget it; closing twice is harmless."""
        if fold.is_closed:
            return
        fold.is_closed = True
        held = self._state.windows if fold.reason == "dedup" else self._state.rate_folds
        if held.get(fold.key) is fold:
            del held[fold.key]
        if fold.count:
            into.append(_summary(fold))

    def _forget_full_buckets(self, now: float) -> None:
        buckets = self._state.buckets
        stale = []
        for key, bucket in buckets.items():
            policy = self._by_rule.get(key[0])
            rate = policy.rate if policy is not None else None
            if rate is None or bucket.tokens + (now - bucket.updated_s) * rate.alerts / rate.per_s >= rate.alerts:
                stale.append(key)
        for key in stale:
            del buckets[key]


def _key(alert: Alert, fields: tuple[str, ...], kind: int) -> _Key:
    """(rule, kind, values...) — `kind` keeps dedup and rate state apart even with the same fields."""
    values = alert.output_fields
    return (alert.rule, kind, *(values.get(name) for name in fields))


def _summary(fold: _Fold) -> Alert:
    last = fold.last
    assert last is not None
    fields: dict[str, Any] = dict(zip(fold.key_fields, fold.key[2:], strict=True))
    fields["suppressed.count"] = fold.count
    fields["suppressed.first_time"] = fold.first_ns
    fields["suppressed.last_time"] = fold.last_ns
    fields["suppressed.reason"] = fold.reason
    shown = " ".join(f"{name}={value if value is not None else '<NA>'}" for name, value in
                     zip(fold.key_fields, fold.key[2:], strict=True))
    output = (f"{fold.count} similar alerts suppressed ({fold.reason}) between {format_iso8601(fold.first_ns)} and "
              f"{format_iso8601(fold.last_ns)}{' for ' + shown if shown else ''}; last: {last.output}")
    return Alert(rule=last.rule, priority=last.priority, source=last.source, ts_ns=fold.last_ns, output=output,
                 output_fields=fields, hostname=last.hostname, tags=last.tags)

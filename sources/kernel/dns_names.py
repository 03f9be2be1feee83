"""The domain names conditions compare socket addresses with (`fd.sip.name = "example.com"`), resolved in the
background.

libsinsp's DNS manager semantics: a name is resolved with getaddrinfo and re-resolved 10 s later; each time its
addresses come back unchanged the interval doubles, up to 320 s, and a change brings it back to 10 s; a name no
check has used for an hour is forgotten until one uses it again. One difference, on purpose: libsinsp resolves a
name it has not seen yet on the event path, blocking it. Here a name is registered when a condition compiles, and
the event path only reads the address sets this module's thread publishes: a name not resolved yet matches nothing.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str], frozenset[IpAddress]]
AddressCheck = Callable[[IpAddress], bool]

BASE_REFRESH_S = 10.0
MAX_REFRESH_S = 320.0
FORGET_AFTER_S = 3600.0
#: One thread resolves names one after another: a bound keeps a refresh round short even when lookups time out.
MAX_NAMES = 256
_TICK_S = 1.0
_STOP_WAIT_S = 2.0


def resolve_addresses(name: str) -> frozenset[IpAddress]:
    """Every IPv4 and IPv6 address `name` resolves to; none when it does not resolve."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        log.debug("dns_name_unresolved", name=name, error=str(exc))
        return frozenset()
    # A link-local IPv6 answer carries its scope (`fe80::1%eth0`); socket addresses the kernel reports do not.
    return frozenset(ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos)


@dataclass(slots=True, eq=False, weakref_slot=True)
class WatchedName:
    """One name a compiled check compares with. `addresses` is None until resolved (and once forgotten);
    `used` is set by the checks and turned into `last_used` by the background thread, so the event path
    does not read a clock."""

    name: str
    last_used: float
    addresses: frozenset[IpAddress] | None = None
    resolved_at: float = 0.0
    interval_s: float = BASE_REFRESH_S
    used: bool = False


class DomainNames:
    """The names compiled checks watch, and the thread that keeps their addresses fresh.

    Entries live as long as a compiled check holds them (a rules reload drops the names no rule uses any more).
    """

    def __init__(self, resolve: Resolve = resolve_addresses, *, clock: Callable[[], float] = time.monotonic,
                 max_names: int = MAX_NAMES) -> None:
        self.resolve = resolve
        self._clock = clock
        self._max_names = max_names
        self._lock = threading.Lock()
        self._names: weakref.WeakValueDictionary[str, WatchedName] = weakref.WeakValueDictionary()
        self._by_address: dict[IpAddress, str] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ----- compile time ---------------------------------------------------------------------------
    def watch(self, name: str) -> WatchedName:
        """The entry for `name`, registered for resolution if new; ValueError past the bound on names."""
        with self._lock:
            entry = self._names.get(name)
            if entry is None:
                if len(self._names) >= self._max_names:
                    raise ValueError(f"conditions name more than {self._max_names} distinct domain names in "
                                     "fd.*ip.name checks; compare with IP addresses or networks (fd.sip, fd.snet) "
                                     "instead")
                entry = self._names[name] = WatchedName(name, last_used=self._clock())
        self._wake.set()
        return entry

    def matcher(self, names: Iterable[str], *, negate: bool = False) -> AddressCheck:
        """Whether an address is among those one of `names` resolves to (`negate`: resolved, and none of
        them). A name not resolved yet decides nothing: both forms are false for it."""
        entries = tuple(self.watch(name) for name in dict.fromkeys(names))

        def matches(address: IpAddress) -> bool:
            for entry in entries:
                entry.used = True
                addresses = entry.addresses
                if addresses is not None and address in addresses:
                    return True
            return False

        def differs(address: IpAddress) -> bool:
            for entry in entries:
                entry.used = True
                addresses = entry.addresses
                if addresses is None or address in addresses:
                    return False
            return True

        return differs if negate else matches

    # ----- event path -----------------------------------------------------------------------------
    def name_of(self, address: IpAddress) -> str | None:
        """A watched name that resolves to `address` (the first registered), as libsinsp shows in outputs."""
        return self._by_address.get(address)

    # ----- background ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """One round: resolve what is new or due, forget what went unused, publish the reverse map."""
        now = self._clock()
        with self._lock:
            entries = list(self._names.values())
        for entry in entries:
            if entry.used:
                entry.used = False
                entry.last_used = now
            if now - entry.last_used > FORGET_AFTER_S:
                entry.addresses = None
                entry.interval_s = BASE_REFRESH_S
            elif entry.addresses is None or now - entry.resolved_at > entry.interval_s:
                self._resolve(entry)
        # Reversed: the first registered name wins an address several names share.
        self._by_address = {address: entry.name for entry in reversed(entries) for address in entry.addresses or ()}

    def _resolve(self, entry: WatchedName) -> None:
        addresses = self.resolve(entry.name)
        if addresses == entry.addresses:
            entry.interval_s = min(entry.interval_s * 2, MAX_REFRESH_S)
        else:
            if entry.addresses is not None:
                log.info("dns_name_changed", name=entry.name, addresses=sorted(map(str, addresses)))
            entry.addresses = addresses
            entry.interval_s = BASE_REFRESH_S
        entry.resolved_at = self._clock()

    def start(self) -> None:
        """Start the background thread (once; a second start while running does nothing)."""
        with self._lock:
            if self._thread is not None:
                return
            # Each thread has its own stop flag: one still inside getaddrinfo after stop() ends on its own.
            self._stopping = stopping = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(stopping,), name="dns-names", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the background thread; a lookup in progress is not waited for beyond a short delay."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
        self._wake.set()
        if thread is not None:
            thread.join(timeout=_STOP_WAIT_S)

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            self._wake.clear()
            try:
                self.refresh()
            except Exception:
                # One bad round must not end the refreshing of every name.
                log.exception("dns_names_refresh_failed")
            self._wake.wait(_TICK_S)


#: The names every compiled `fd.*ip.name` check shares, as libsinsp's DNS manager is one per process.
DOMAIN_NAMES = DomainNames()

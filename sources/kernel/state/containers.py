"""Container metadata by full id, fetched from the runtime in the background and cached.

The record path only ever asks `request()` (never blocks) and `drain()` (integrates what the
background fetches found, at a point of the record stream a capture can record). Extractors read
`get()`; until the runtime answered, container fields other than the id are not available.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor, wait

from sources.kernel.state.host import ContainerMeta, HostView


class ContainerRegistry:
    """Bounded cache of ContainerMeta; with `fetch` off (replay) it learns only through `learn()`."""

    def __init__(self, host: HostView, *, fetch: bool, max_containers: int = 4096,
                 first_wait_s: float = 0.1) -> None:
        self._host = host
        self._meta: OrderedDict[str, ContainerMeta] = OrderedDict()
        self._requested: set[str] = set()
        #: Metadata fetched and not yet integrated (`drain`). Fetch threads append, the state thread pops: deque
        #: operations are atomic, and an empty deque is a cheap check on every record (a queue's get_nowait
        #: raising Empty is not).
        self.fetched: deque[ContainerMeta] = deque()
        self._pending: set[Future[None]] = set()
        self._max = max_containers
        self._first_wait_s = first_wait_s
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="container-meta") if fetch else None

    def get(self, container_id: str) -> ContainerMeta | None:
        return self._meta.get(container_id)

    def request(self, container_id: str) -> None:
        """Start fetching a container's metadata unless it was asked for already."""
        if self._executor is None or not container_id or container_id in self._requested:
            return
        self._requested.add(container_id)
        future = self._executor.submit(self._fetch, container_id)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        # A local runtime answers in milliseconds: waiting that long lets the first events of a new container
        # (its entrypoint, an escape right at start) carry its name and pod; a slow runtime costs at most this.
        wait([future], timeout=self._first_wait_s)

    def drain(self) -> list[ContainerMeta]:
        """Integrate every finished fetch; returns what was learned, in order."""
        learned: list[ContainerMeta] = []
        done = self.fetched
        while done:
            meta = done.popleft()
            self.learn(meta)
            learned.append(meta)
        return learned

    def settle(self, timeout_s: float) -> list[ContainerMeta]:
        """Wait up to `timeout_s` for the fetches in flight, then drain (shutdown and tests)."""
        wait(list(self._pending), timeout=timeout_s)
        return self.drain()

    def learn(self, meta: ContainerMeta) -> None:
        self._meta[meta.id] = meta
        self._meta.move_to_end(meta.id)
        while len(self._meta) > self._max:
            old, _ = self._meta.popitem(last=False)
            self._requested.discard(old)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _fetch(self, container_id: str) -> None:
        meta = self._host.container(container_id)
        # An unknown container is remembered as such, so it is not asked for again and again.
        self.fetched.append(meta if meta is not None else ContainerMeta(container_id))

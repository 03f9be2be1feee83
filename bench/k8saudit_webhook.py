"""Webhook benchmark: audit batches of 100 events posted over loopback, accepted and evaluated by the rules.

A client process posts EventLists (keep-alive connections, a few in parallel) to
(a) a trivial aiohttp handler that reads the body and answers 200 — the HTTP baseline — and
(b) the agent's webhook feeding the engine loaded with the upstream k8s audit rules.
It prints events/s end to end (until the engine evaluated the last event), request latency
percentiles and drops. A run in which the engine evaluated fewer events than the client posted, or the
samples (Falco's regression traces, which alert) raised no alert, exits 1 with no figures.
With --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import resource
import subprocess
import sys
import threading
import time
from typing import Any

import orjson
from accounting import Tally, main_guard
from aiohttp import web
from samples import REFERENCE, k8s_audit_events, with_reads

from agent.builtin_sources import new_engine
from agent.event_queue import EventQueue
from agent.gc_tuning import settle_after_startup
from sources.k8saudit.webhook import AuditWebhook, WebhookSettings

PATH = "/k8s-audit"


def bodies(batches: int, batch_size: int, mix: str) -> list[bytes]:
    events = k8s_audit_events() if mix == "samples" else with_reads(k8s_audit_events())
    out = []
    for b in range(batches):
        items = [events[(b * batch_size + i) % len(events)] for i in range(batch_size)]
        out.append(orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}))
    return out


# ----- client process -------------------------------------------------------------------------
def run_client(port: int, batches: int, batch_size: int, concurrency: int, mix: str) -> None:
    payloads = bodies(batches, batch_size, mix)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def worker(share: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for body in share:
            while True:
                start = time.perf_counter()
                conn.request("POST", PATH, body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status != 503:
                    break
                time.sleep(0.01)  # the apiserver backs off too; this client retries the same batch
        conn.close()

    threads = [threading.Thread(target=worker, args=(payloads[i::concurrency],)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    print(json.dumps({
        "seconds": time.perf_counter() - started,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "statuses": statuses,
    }))


def spawn_client(port: int, args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", str(port), "--batches", str(args.batches),
         "--batch-size", str(args.batch_size), "--concurrency", str(args.concurrency), "--mix", args.mix],
        capture_output=True, text=True, timeout=600, check=True)
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


# ----- servers --------------------------------------------------------------------------------
class TrivialServer:
    """Reads the body and answers 200: what HTTP alone costs."""

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._ready = threading.Event()

    def _serve(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(text="{}", content_type="application/json")

        async def open_site() -> web.AppRunner:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_post(PATH, handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            return runner

        runner = self._loop.run_until_complete(open_site())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> TrivialServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def bench_agent(args: argparse.Namespace) -> dict[str, Any]:
    engine = new_engine()
    result = engine.load_rules_files([REFERENCE / "rules" / "k8s_audit_rules.yaml"])
    assert result.successful, result.as_text()
    queue = EventQueue(args.queue_events)
    hook = AuditWebhook(WebhookSettings(host="127.0.0.1", port=0, path=PATH))
    hook.start(queue)
    settle_after_startup()
    expected = args.batches * args.batch_size
    first_batch_at = 0.0
    done = threading.Event()

    def consume() -> None:
        nonlocal first_batch_at
        while engine.stats.events < expected:
            batch = queue.get(timeout_s=30)
            if batch is None:
                break
            first_batch_at = first_batch_at or time.perf_counter()
            for event in batch.events:
                engine.process(event)
        done.set()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    client = spawn_client(hook.address[1], args)  # type: ignore[index]
    done.wait(120)
    # From the first queued batch to the last evaluated event: client start-up is not counted.
    seconds = time.perf_counter() - first_batch_at
    hook.stop()
    metrics = hook.metrics()
    tally = Tally("webhook", offered=expected, evaluated=engine.stats.events, alerts=engine.stats.alerts,
                  expect_alerts=True, notes=[f"the webhook accepted {metrics['events_accepted']:,} events"])
    tally.verify()
    return {"client": client, "seconds": seconds, "evaluated": tally.evaluated, "alerts": tally.alerts,
            "refused_503": metrics.get("requests_refused_503", 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--queue-events", type=int, default=100_000)
    parser.add_argument("--mix", choices=["samples", "reads"], default="samples",
                        help="samples: Falco's regression traces (nine in ten alert); reads: nine reads per sample")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.client is not None:
        run_client(args.client, args.batches, args.batch_size, args.concurrency, args.mix)
        return 0
    if not REFERENCE.is_dir():
        print(f"reference data not found at {REFERENCE}", file=sys.stderr)
        return 2
    total = args.batches * args.batch_size
    with TrivialServer() as trivial:
        base = spawn_client(trivial.port, args)
    agent = bench_agent(args)
    figures = {
        "mix": args.mix,
        "events": total,
        "baseline_events_per_s": round(total / base["seconds"]),
        "baseline_p99_ms": round(base["p99_ms"], 2),
        "events_per_s": round(agent["evaluated"] / agent["seconds"]),
        "us_per_event": round(agent["seconds"] / max(agent["evaluated"], 1) * 1e6, 2),
        "p50_ms": round(agent["client"]["p50_ms"], 2),
        "p99_ms": round(agent["client"]["p99_ms"], 2),
        "evaluated": agent["evaluated"],
        "alerts": agent["alerts"],
        "drops": total - agent["evaluated"],
        "retried_503": agent["refused_503"],
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    figures["ratio_vs_baseline"] = round(figures["baseline_events_per_s"] / max(figures["events_per_s"], 1), 2)
    print(f"baseline (trivial handler): {figures['baseline_events_per_s']:,} events/s, "
          f"p99 {figures['baseline_p99_ms']} ms")
    print(f"webhook + upstream k8s rules: {figures['events_per_s']:,} events/s "
          f"({figures['us_per_event']} µs/event), p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, "
          f"{figures['alerts']} alerts, drops {figures['drops']}, 503 retries {figures['retried_503']}")
    print(f"baseline is {figures['ratio_vs_baseline']}x faster; max RSS {figures['rss_mb']} MiB")
    if args.json:
        print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))

"""gRPC fan-out benchmark: alerts/s delivered to 1, 10 and 100 subscribers, and emit-to-receipt latency.

The server (spool, fan-out, gRPC on a unix socket) runs in this process; subscribers run in
separate client processes, several threads each, as real consumers would. Per subscriber count:
a throughput phase emits alerts as fast as `GrpcOutput.emit` takes them and times until every
subscriber has received all of them; a latency phase emits at a fixed rate (default 1k alerts/s)
and measures, per received alert, the time from `emit` to the client having parsed it (p50, p99).
The baseline is `emit` with no subscriber: encoding plus the spool append. With --json the last
line is one JSON object with every figure.

Every alert emitted must be published by the fan-out and spooled without error, and every subscriber
must receive every one of them (a gap, an alert its queue could not hold, is a miss): otherwise the
run exits 1 with no figures (bench/accounting.py).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from accounting import BenchmarkInvalid, Tally, main_guard, require_none

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.alert import Alert  # noqa: E402
from agent.priority import Priority  # noqa: E402

if TYPE_CHECKING:
    from agent.grpc.subscriptions import Fanout

_RESULTS_TIMEOUT_S = 300


def _alert(i: int) -> Alert:
    return Alert(rule="Write below etc", priority=Priority.WARNING, source="syscall", ts_ns=time.time_ns(),
                 output=f"File below /etc opened for writing (user=root command=touch /etc/x{i} file=/etc/x{i})",
                 output_fields={"user.name": "root", "proc.cmdline": f"touch /etc/x{i}", "fd.name": f"/etc/x{i}",
                                "proc.pid": 1000 + i, "container.id": "host", "proc.pname": "bash"},
                 hostname="bench", tags=("filesystem", "mitre_persistence"))


def _subscriber(target: str, total: int, marks: int, ready: Any, results: Any, index: int, max_batch: int) -> None:
    """Receives until `total` alerts were received or reported missed (in gaps); reports both counts."""
    import grpc

    from agent.grpc._gen.falco_agent.v1 import alerts_pb2 as pb
    from agent.grpc._gen.falco_agent.v1 import alerts_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        call = pb_grpc.AlertServiceStub(channel).Subscribe(pb.SubscribeRequest(max_batch=max_batch))
        ready.put(index)
        received = missed = 0
        throughput_done_ns = 0
        latencies: list[int] = []
        for response in call:
            now = time.time_ns()
            kind = response.WhichOneof("event")
            if kind == "gap":
                missed += response.gap.missed
            else:
                for alert in (response.alert,) if kind == "alert" else response.batch.alerts:
                    received += 1
                    if alert.seq > marks:
                        t = alert.time
                        latencies.append(now - (t.seconds * 1_000_000_000 + t.nanos))
            if not throughput_done_ns and received + missed >= marks:
                throughput_done_ns = now
            if received + missed >= total:
                break
        call.cancel()
    results.put((index, throughput_done_ns, received, missed, latencies))


def _client_process(target: str, count: int, first_index: int, total: int, marks: int, ready: Any,
                    results: Any, max_batch: int) -> None:
    threads = [threading.Thread(target=_subscriber,
                                args=(target, total, marks, ready, results, first_index + k, max_batch))
               for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _percentile(values: list[int], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


def run(subscribers: int, throughput_alerts: int, latency_alerts: int, rate: float, spool_dir: Path,
        max_batch: int) -> dict[str, Any]:
    from agent.grpc.server import AlertServer

    sock = spool_dir / "bench.sock"
    server = AlertServer(spool_dir=spool_dir / f"spool-{subscribers}", socket_path=sock,
                         max_subscribers=max(128, subscribers),
                         subscriber_queue_size=throughput_alerts + latency_alerts)
    server.start()
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    total = throughput_alerts + latency_alerts
    procs_n = min(subscribers, 4)
    per = [subscribers // procs_n + (1 if k < subscribers % procs_n else 0) for k in range(procs_n)]
    procs, start = [], 0
    for count in per:
        p = ctx.Process(target=_client_process, args=(f"unix:{sock}", count, start, total, throughput_alerts,
                                                      ready, results, max_batch))
        p.start()
        procs.append(p)
        start += count
    try:
        for _ in range(subscribers):
            ready.get(timeout=60)
        if not server.fanout.wait_for_subscribers(subscribers, 60):
            raise RuntimeError("subscribers did not attach")
        output = server.output
        published_before, spool_errors_before = server.fanout.published, server.fanout.spool_errors
        began_ns = time.time_ns()
        for i in range(throughput_alerts):
            output.emit(_alert(i))
        emitted_ns = time.time_ns()
        interval = 1.0 / rate
        next_t = time.perf_counter()
        for i in range(latency_alerts):
            output.emit(_alert(throughput_alerts + i))
            next_t += interval
            pause = next_t - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        try:
            got = [results.get(timeout=_RESULTS_TIMEOUT_S) for _ in range(subscribers)]
        except queue.Empty:
            raise BenchmarkInvalid(f"{subscribers} subscribers: not all of them received or missed the {total} "
                                   f"alerts within {_RESULTS_TIMEOUT_S} s") from None
        published = _published(server.fanout, f"{subscribers}_subscribers_publish", total, published_before,
                                spool_errors_before)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        server.stop(grace_s=0)
    # Every subscriber had to receive every alert published: a gap is a miss.
    deliveries = Tally(f"{subscribers}_subscribers_deliveries", offered=published * subscribers,
                       evaluated=sum(g[2] for g in got))
    deliveries.verify()
    done_ns = max(g[1] for g in got)
    latencies = [lat for g in got for lat in g[4]]
    elapsed_s = (done_ns - began_ns) / 1e9
    return {
        "subscribers": subscribers,
        "alerts": throughput_alerts,
        "published": published, "delivered": deliveries.evaluated,
        "emit_per_s": round(throughput_alerts / ((emitted_ns - began_ns) / 1e9)),
        "alerts_per_s_each": round(throughput_alerts / elapsed_s),
        "deliveries_per_s": round(throughput_alerts * subscribers / elapsed_s),
        "latency_rate_per_s": rate,
        "p50_ms": round(_percentile(latencies, 0.50), 3),
        "p99_ms": round(_percentile(latencies, 0.99), 3),
        "gaps": sum(g[3] for g in got),
    }


def _published(fanout: Fanout, phase: str, emitted: int, published_before: int, spool_errors_before: int) -> int:
    """What the fan-out published of the `emitted` alerts; BenchmarkInvalid unless it published and spooled
    every one."""
    published = Tally(phase, offered=emitted, evaluated=fanout.published - published_before)
    problems = published.problems()
    if fanout.spool_errors > spool_errors_before:
        problems.append(f"{phase}: {fanout.spool_errors - spool_errors_before:,} spool appends failed")
    require_none(problems)
    return published.evaluated


def baseline(alerts: int, spool_dir: Path) -> float:
    """emit() per second with nobody subscribed: protobuf encoding plus the spool append."""
    from agent.grpc.spool import Spool
    from agent.grpc.subscriptions import Fanout, GrpcOutput

    spool = Spool(spool_dir / "spool-baseline")
    fanout = Fanout(spool)
    output = GrpcOutput(fanout)
    batch = [_alert(i) for i in range(alerts)]
    began = time.perf_counter()
    for alert in batch:
        output.emit(alert)
    elapsed = time.perf_counter() - began
    spool.close()
    _published(fanout, "baseline", alerts, 0, 0)
    return alerts / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", default="1,10,100", help="comma-separated subscriber counts")
    parser.add_argument("--alerts", type=int, default=20_000, help="alerts in each throughput phase")
    parser.add_argument("--latency-alerts", type=int, default=3_000, help="alerts in each latency phase")
    parser.add_argument("--rate", type=float, default=1000.0, help="alerts/s in the latency phase")
    parser.add_argument("--max-batch", type=int, default=256, help="SubscribeRequest.max_batch (1: no batching)")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = parser.parse_args(argv)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only: keep stdout clean
    runs = []
    with tempfile.TemporaryDirectory(prefix="fa-bench-", dir="/tmp") as tmp:
        base = baseline(args.alerts, Path(tmp))
        print(f"baseline emit, no subscriber: {base:,.0f} alerts/s ({1e6 / base:.1f} us/alert)")
        for n in (int(x) for x in args.subscribers.split(",")):
            r = run(n, args.alerts, args.latency_alerts, args.rate, Path(tmp), args.max_batch)
            runs.append(r)
            print(f"{n:>4} subscribers: {r['alerts_per_s_each']:>8,} alerts/s each, {r['deliveries_per_s']:>9,} "
                  f"deliveries/s (emit {r['emit_per_s']:,}/s); at {args.rate:.0f}/s latency p50 {r['p50_ms']} ms, "
                  f"p99 {r['p99_ms']} ms; gaps {r['gaps']}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print(orjson.dumps({"baseline_emit_per_s": round(base), "us_per_event": round(1e6 / base, 2),
                            "events_per_s": runs[0]["alerts_per_s_each"] if runs else None,
                            "drops": sum(r["gaps"] for r in runs), "rss_mb": round(rss_mb, 1),
                            "runs": runs}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))

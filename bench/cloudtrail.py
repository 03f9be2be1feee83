"""CloudTrail benchmark: records/s from local .json.gz log files, and from a local S3 endpoint.

Local files: the reference samples, written as gzipped log files until there are --records
records, go through gunzip + orjson.loads alone (the baseline) and through the whole path —
decode, evaluate `aws_cloudtrail_rules.yaml` — in the same run. S3: the same objects uploaded to
a moto server on 127.0.0.1, read by the S3 poller with 1 and 8 concurrent downloads and evaluated by the
same rules as they arrive. Every phase counts the records the engine evaluated; fewer than offered, or no
alert from the samples (Stratus attack logs, which alert), exits 1 with no figures.
With --json the last line is one JSON object of all figures.
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import sys
import threading
import time

import orjson
from accounting import Tally, counted, main_guard
from samples import REFERENCE, cloudtrail_records

from agent.builtin_sources import new_engine
from agent.engine.engine import Engine
from agent.event_queue import EventQueue
from sources.cloudtrail.decoder import CloudTrailDecoder
from sources.cloudtrail.objects import decode_object

RECORDS_PER_FILE = 500


def log_files(total: int) -> list[bytes]:
    """Gzipped log files of RECORDS_PER_FILE records each, `total` records in all."""
    records = cloudtrail_records()
    files = []
    for start in range(0, total, RECORDS_PER_FILE):
        chunk = [records[(start + i) % len(records)] for i in range(min(RECORDS_PER_FILE, total - start))]
        files.append(gzip.compress(orjson.dumps({"Records": chunk}), compresslevel=6))
    return files


def loaded_engine() -> Engine:
    engine = new_engine()
    result = engine.load_rules_files([REFERENCE / "rules" / "aws_cloudtrail_rules.yaml"])
    if not result.successful:
        raise SystemExit(result.as_text())
    return engine


def bench_local(files: list[bytes], total: int) -> dict[str, float]:
    start = time.perf_counter()
    for data in files:
        orjson.loads(gzip.decompress(data))
    baseline_s = time.perf_counter() - start
    engine = loaded_engine()
    decoder = CloudTrailDecoder(hostname="bench")
    tally = Tally("local", expect_alerts=True)
    with counted(engine, tally, total):
        start = time.perf_counter()
        for n, data in enumerate(files):
            for event in decode_object(data, name=f"file-{n}", decoder=decoder).events:
                engine.process(event)
        full_s = time.perf_counter() - start
    return {
        "local_baseline_records_per_s": round(total / baseline_s),
        "local_records_per_s": round(total / full_s),
        "local_us_per_record": round(full_s / total * 1e6, 3),
        "local_ratio_vs_baseline": round(full_s / baseline_s, 2),
        **tally.as_figures(),
    }


def bench_s3(files: list[bytes], total: int, concurrency: int) -> dict[str, float]:
    """Records/s read from a moto S3 endpoint by the poller and evaluated by the rules, one pass."""
    import boto3
    from moto.server import ThreadedMotoServer

    from sources.cloudtrail.aws import AwsSettings
    from sources.cloudtrail.s3 import S3TrailPoller

    # The poller finds credentials through boto3's usual chain; moto accepts any.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench", "region_name": "us-east-1"}
        s3 = boto3.client("s3", endpoint_url=endpoint, **creds)
        s3.create_bucket(Bucket="bench-trail")
        prefix = "AWSLogs/o-bench/111122223333/CloudTrail/us-east-1/2024/08/01/"
        for n, data in enumerate(files):
            s3.put_object(Bucket="bench-trail", Key=f"{prefix}111122223333_CloudTrail_us-east-1_{n:06d}.json.gz",
                          Body=data)
        queue = EventQueue(1_000_000)
        poller = S3TrailPoller(bucket="bench-trail", concurrency=concurrency, follow=False,
                               aws=AwsSettings(region="us-east-1", endpoint_url=endpoint))
        engine = loaded_engine()

        def consume() -> None:
            while engine.stats.events < total:
                batch = queue.get(timeout_s=60)
                if batch is None:
                    return
                for event in batch.events:
                    engine.process(event)
                if batch.on_done:
                    batch.on_done()

        consumer = threading.Thread(target=consume, daemon=True)
        tally = Tally(f"s3_c{concurrency}", expect_alerts=True)
        with counted(engine, tally, total):
            consumer.start()
            start = time.perf_counter()
            poller.start(queue)
            consumer.join(timeout=600)
            elapsed = time.perf_counter() - start
            poller.stop()
        return {f"s3_c{concurrency}_records_per_s": round(tally.evaluated / elapsed), **tally.as_figures()}
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--s3-records", type=int, default=50_000)
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not REFERENCE.is_dir():
        print(f"reference data not found at {REFERENCE}", file=sys.stderr)
        return 2
    figures: dict[str, float] = {"records": args.records}
    figures.update(bench_local(log_files(args.records), args.records))
    print(f"local .json.gz: gunzip+orjson.loads alone {figures['local_baseline_records_per_s']:,} records/s; "
          f"decode+evaluate {figures['local_records_per_s']:,} records/s ({figures['local_us_per_record']} µs), "
          f"{figures['local_ratio_vs_baseline']}x baseline, {figures['local_evaluated']:,} records evaluated, "
          f"{figures['local_alerts']} alerts")
    if not args.skip_s3:
        s3_files = log_files(args.s3_records)
        for concurrency in (1, 8):
            result = bench_s3(s3_files, args.s3_records, concurrency)
            figures.update(result)
            print(f"S3 (moto on 127.0.0.1), {concurrency} concurrent downloads: "
                  f"{result[f's3_c{concurrency}_records_per_s']:,} records/s evaluated, "
                  f"{result[f's3_c{concurrency}_alerts']} alerts")
    figures["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.json:
        print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))

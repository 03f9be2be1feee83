"""Kernel behaviour written compactly in recorded streams (the kernel scenario form of
agent.rule_tests.kernel_scenario, which `falco-agent rules test` reads), turned into kernel capture files.

A line `{"kernel": {...}}` of a stream says what a process in a pod does; everything else on the line's
stream is audit or CloudTrail input as recorded. Each run of kernel lines is applied to the kernel source's
state with a `CaptureWriter` as its observer: the capture is then replayed like any other (`falco-agent
replay`), so every field comes from the kernel source's own extractors.

Run `python -m tests.support.kernel_scenarios STREAM OUT_DIR` to write a stream's input files (audit or
CloudTrail JSON lines, kernel captures) into OUT_DIR and print their paths in arrival order, for
`falco-agent replay -r rules/correlation.yaml $(...)`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path
from typing import Any

import orjson

from agent.rule_tests.kernel_scenario import Pod, pod, scenario_events, time_ns
from sources.kernel.capture import write_capture

KERNEL = "kernel"
__all__ = ["KERNEL", "Pod", "kernel_pods", "pod", "stream_files", "stream_lines", "time_ns"]


def write_kernel_capture(lines: list[dict[str, Any]], path: Path) -> None:
    """The kernel events the kernel lines describe, captured to `path`."""
    with write_capture(path) as writer:
        for _event in scenario_events(lines, observer=writer):
            pass


def stream_lines(path: Path) -> list[tuple[bool, bytes]]:
    """Each non-empty line of a stream, with whether it is a kernel line."""
    out = []
    for raw in path.read_bytes().splitlines():
        if raw.strip():
            out.append((KERNEL in orjson.loads(raw), raw))
    return out


def stream_files(path: Path, out_dir: Path) -> list[Path]:
    """A stream as input files in arrival order: each run of kernel lines a capture, each other run JSON lines."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for index, (is_kernel, run) in enumerate(groupby(stream_lines(path), key=lambda item: item[0])):
        raws = [raw for _, raw in run]
        stem = path.name.removesuffix(".jsonl")
        if is_kernel:
            target = out_dir / f"{stem}.{index}.kernel-capture.jsonl"
            write_kernel_capture([orjson.loads(raw)[KERNEL] for raw in raws], target)
        else:
            target = out_dir / f"{stem}.{index}.jsonl"
            target.write_bytes(b"\n".join(raws) + b"\n")
        files.append(target)
    return files


def kernel_pods(path: Path) -> Iterator[Pod]:
    """The pods a stream's kernel lines name, in order of first appearance."""
    seen = dict.fromkeys(orjson.loads(raw)[KERNEL]["pod"] for is_kernel, raw in stream_lines(path) if is_kernel)
    yield from (pod(name) for name in seen)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m tests.support.kernel_scenarios STREAM OUT_DIR")
    for written in stream_files(Path(sys.argv[1]), Path(sys.argv[2])):
        print(written)

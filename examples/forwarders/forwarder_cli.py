"""The command line every forwarder shares: `--config FILE`, logs to stderr, SIGTERM/SIGINT stop cleanly.

Exit codes: 0 stopped by a signal, 1 the agent refused the subscription for good, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TypeVar

import grpc
import structlog
from forwarder_config import ForwarderSettings, load_settings
from forwarding import Forwarder, Sink

from agent.errors import ConfigError
from agent.logging import configure_logging

__all__ = ["run_forwarder"]

T = TypeVar("T")
log = structlog.get_logger(__name__)


def run_forwarder(argv: Sequence[str] | None, *, name: str, own_key: str, own_cls: type[T],
                  build_sink: Callable[[ForwarderSettings, T], Sink], description: str) -> int:
    """Parse arguments, load the configuration, run the forwarder until a signal; the process exit code."""
    parser = argparse.ArgumentParser(prog=name, description=description)
    parser.add_argument("-c", "--config", required=True, help="forwarder YAML file (see examples/forwarders/*.yaml)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    configure_logging(level=args.log_level)
    try:
        settings, own = load_settings(args.config, own_key, own_cls)
        forwarder = Forwarder(settings, build_sink(settings, own), name=name)
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("forwarder_signal", signal=signal.Signals(signum).name)
        forwarder.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        forwarder.run()
    except grpc.RpcError as exc:
        print(f"{name}: the agent refused the subscription: {exc.details()}", file=sys.stderr)
        return 1
    return 0

"""The gRPC server: transports, limits and lifecycle around the alert fan-out and spool.

One server carries our `falco_agent.v1.AlertService`, Falco's legacy `falco.outputs.service`
and `falco.version.service`, and the standard `grpc.health.v1.Health`. It listens on a unix
socket (file mode 0600), on TCP with TLS or mutual TLS, or both. Plain TCP needs an explicit
`allow_insecure_tcp=True` (tests and benchmarks on loopback). The keyword arguments are the keys of the
`grpc` configuration section, and every ConfigError names the key to change (`grpc.spool_dir: ...`).

Usage: `server = AlertServer(spool_dir=..., socket_path=...)`; add `server.output` to the
agent's outputs; `server.start()`; at shutdown `server.stop()` (which also closes the spool).
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from concurrent import futures
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent.errors import ConfigError
from agent.grpc.legacy import OUTPUTS_SERVICE, VERSION_SERVICE, LegacyOutputsApi, LegacyVersionApi
from agent.grpc.service import SERVICE_NAME, AlertApi
from agent.grpc.spool import Spool
from agent.grpc.subscriptions import Fanout, GrpcOutput
from agent.grpc.tls import ServerTls

__all__ = ["DEFAULT_SOCKET_PATH", "AlertServer", "SubscriberLimit"]

log = structlog.get_logger(__name__)
DEFAULT_SOCKET_PATH = "/run/falco-agent/grpc.sock"
_EXTRA_WORKERS = 16  # unary calls and refusals beyond the subscriber limit


class SubscriberLimit:
    """A counter of open streaming subscriptions with a ceiling; thread-safe."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.active = 0
        self.refused = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self.active >= self.maximum:
                self.refused += 1
                return False
            self.active += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.active -= 1


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file left by a dead process; refuse to take over a live one."""
    if not path.exists():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise ConfigError(f"grpc.socket_path: {path} exists and is not a socket; remove it or change the key")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise ConfigError(f"grpc.socket_path: {path} is in use by another process (another agent?); stop it or "
                      "change the key")


class AlertServer:
    """Owns the spool, the fan-out (`output`) and the gRPC server; `start()` binds, `stop()` drains."""

    def __init__(self, *, spool_dir: str | os.PathLike[str], socket_path: str | os.PathLike[str] | None = None,
                 address: str | None = None, tls_cert: str | os.PathLike[str] | None = None,
                 tls_key: str | os.PathLike[str] | None = None, tls_client_ca: str | os.PathLike[str] | None = None,
                 allow_insecure_tcp: bool = False, max_subscribers: int = 64, subscriber_queue_size: int = 10_000,
                 spool_max_bytes: int = 256 * 1024 * 1024, spool_max_age_s: float = 7 * 86400.0,
                 spool_fsync_interval_s: float | None = 1.0, keepalive_time_s: float = 30.0,
                 keepalive_timeout_s: float = 10.0, max_get_limit: int = 10_000, legacy_get_limit: int = 1000,
                 enable_legacy: bool = True, engine_version: tuple[int, int, int] = (0, 0, 0),
                 stop_grace_s: float = 2.0) -> None:
        if socket_path is None and address is None:
            raise ConfigError("grpc: give socket_path, address or both (or set grpc.enabled=false)")
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("grpc.tls: TLS needs both cert_file and key_file")
        if tls_client_ca is not None and tls_cert is None:
            raise ConfigError("grpc.tls: mutual TLS (client_ca_file) needs cert_file and key_file")
        if address is not None and tls_cert is None and not allow_insecure_tcp:
            raise ConfigError(f"grpc.address: TCP {address} needs TLS (grpc.tls), or grpc.allow_insecure_tcp")
        self.socket_path = Path(socket_path) if socket_path is not None else None
        self.address = address
        self.tls = ServerTls(tls_cert, tls_key, tls_client_ca) if tls_cert is not None and tls_key else None
        self.limit = SubscriberLimit(max_subscribers)
        try:
            self.spool = Spool(spool_dir, max_bytes=spool_max_bytes, max_age_s=spool_max_age_s,
                               fsync_interval_s=spool_fsync_interval_s)
        except OSError as exc:
            raise ConfigError(f"grpc.spool_dir: cannot write the spool in {spool_dir}: {exc.strerror or exc}; "
                              "make it a writable directory or change the key") from None
        self.fanout = Fanout(self.spool, queue_size=subscriber_queue_size)
        self.output = GrpcOutput(self.fanout)
        self.port: int | None = None
        self._keepalive = (keepalive_time_s, keepalive_timeout_s)
        self._stop_grace_s = stop_grace_s
        self._apis: list[grpc.GenericRpcHandler] = [
            AlertApi(self.fanout, self.limit, max_get_limit=max_get_limit).handler()]
        self._health = health.HealthServicer()
        self._served = [SERVICE_NAME]
        if enable_legacy:
            self.legacy_outputs = LegacyOutputsApi(self.fanout, self.limit, get_limit=legacy_get_limit)
            self._apis += [self.legacy_outputs.handler(), LegacyVersionApi(engine_version=engine_version).handler()]
            self._served += [OUTPUTS_SERVICE, VERSION_SERVICE]
        self._server: grpc.Server | None = None

    def _options(self) -> list[tuple[str, int]]:
        time_s, timeout_s = self._keepalive
        return [
            ("grpc.keepalive_time_ms", int(time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
            ("grpc.so_reuseport", 0),
        ]

    def start(self) -> None:
        """Bind every configured transport and start serving; ConfigError when a bind fails."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.limit.maximum + _EXTRA_WORKERS,
                                                        thread_name_prefix="grpc"),
                             handlers=self._apis, options=self._options())
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if self.socket_path is not None:
            self._bind_unix(server, self.socket_path)
        if self.address is not None:
            try:
                self._bind_tcp(server, self.address)
            except ConfigError:
                if self.socket_path is not None:
                    self.socket_path.unlink(missing_ok=True)  # bound just above, never served
                raise
        server.start()
        for name in ["", *self._served]:
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        log.info("grpc_server_started", socket=str(self.socket_path) if self.socket_path else None,
                 address=self.address, port=self.port, tls="mutual" if self.tls and self.tls.is_mutual
                 else "server" if self.tls else "none", max_subscribers=self.limit.maximum)

    def _bind_unix(self, server: grpc.Server, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _clear_stale_socket(path)
            server.add_insecure_port(f"unix:{path}")
            # Bound but not yet listening: nobody can connect before the mode is tightened.
            os.chmod(path, 0o600)
        except (OSError, RuntimeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ConfigError(f"grpc.socket_path: cannot listen on unix socket {path}: {reason}") from None

    def _bind_tcp(self, server: grpc.Server, address: str) -> None:
        try:
            if self.tls is not None:
                self.port = server.add_secure_port(address, self.tls.credentials())
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"grpc.address: cannot listen on {address}: {exc}") from None
        if not self.port:
            raise ConfigError(f"grpc.address: cannot listen on {address}")

    @property
    def tcp_target(self) -> str | None:
        """`host:port` with the bound port (useful with port 0)."""
        if self.address is None or self.port is None:
            return None
        return f"{self.address.rsplit(':', 1)[0]}:{self.port}"

    def stop(self, grace_s: float | None = None) -> None:
        """Report NOT_SERVING, end every stream, stop the server, then close the spool. Idempotent."""
        self._health.enter_graceful_shutdown()
        self.fanout.close()
        server, self._server = self._server, None
        if server is not None:
            server.stop(self._stop_grace_s if grace_s is None else grace_s).wait()
        self.spool.close()
        if server is not None and self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)
        log.info("grpc_server_stopped", published=self.fanout.published, refused=self.limit.refused)

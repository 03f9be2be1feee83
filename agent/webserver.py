"""The agent's web server, Falco's `webserver`: `/healthz` (at `k8s_healthz_endpoint`), `/versions` and `/metrics`.

`/metrics` serves, from one snapshot per scrape, Falco's `falcosecurity_*` families (agent.falco_metrics), the
agent's own `falco_agent_*` ones (agent.metrics) and the standard `process_*` ones; it answers 404 with the key to
set when `metrics.enabled` or `webserver.prometheus_metrics_enabled` is off. `/healthz` answers Falco's
`{"status": "ok"}` with the agent's details added, and 503 naming each part that does not do its work. With
`ssl_enabled`, every connection is TLS, with the certificate and key of the one PEM file `ssl_certificate`.

Each request runs on its own thread (`threadiness` is not needed); a TLS handshake happens on that thread, so a
slow client never holds up the others.
"""

from __future__ import annotations

import errno
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from agent.config.schema import AgentConfig, WebserverConfig
from agent.errors import ConfigError
from agent.falco_metrics import FalcoMetricsReader, prometheus_families
from agent.metrics import HealthProblem, Heartbeat, MetricsSnapshot, agent_families, health

__all__ = ["METRICS_PATH", "VERSIONS_PATH", "WebServer", "metrics_off_reason"]

log = structlog.get_logger(__name__)

METRICS_PATH = "/metrics"
VERSIONS_PATH = "/versions"
_JSON = "application/json"
# A client that stops sending mid-request frees its thread after this long.
_REQUEST_TIMEOUT_S = 30.0


def metrics_off_reason(config: AgentConfig) -> str:
    """Why `/metrics` is not served, with the key to set; empty when it is."""
    if not config.metrics.enabled:
        return "metrics are off: set metrics.enabled=true to serve them"
    if not config.webserver.prometheus_metrics_enabled:
        return "Prometheus metrics are off: set webserver.prometheus_metrics_enabled=true to serve them"
    return ""


class _ScrapeCollector(Collector):
    """One snapshot per scrape, rendered as the agent's families and Falco's."""

    def __init__(self, collect: Callable[[], MetricsSnapshot], heartbeat: Heartbeat,
                 falco: FalcoMetricsReader | None) -> None:
        self._collect = collect
        self._heartbeat = heartbeat
        self._falco = falco

    def collect(self) -> Iterator[Metric]:
        snap = self._collect()
        if self._falco is not None:
            yield from prometheus_families(self._falco.read(snap))
        yield from agent_families(snap, self._heartbeat)


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"
    timeout = _REQUEST_TIMEOUT_S

    def do_GET(self) -> None:
        web = self.server.web
        path = self.path.split("?", 1)[0]
        if path == web.healthz_path:
            self._healthz()
        elif path == VERSIONS_PATH:
            self._reply(HTTPStatus.OK, orjson.dumps(web.versions()), _JSON)
        elif path == METRICS_PATH:
            self._metrics()
        else:
            self._reply(HTTPStatus.NOT_FOUND, orjson.dumps(
                {"error": f"not found; try {METRICS_PATH}, {web.healthz_path} or {VERSIONS_PATH}"}), _JSON)

    def _metrics(self) -> None:
        web = self.server.web
        if web.metrics_off:
            self._reply(HTTPStatus.NOT_FOUND, orjson.dumps({"error": web.metrics_off}), _JSON)
            return
        try:
            body = generate_latest(web.registry)
        except Exception as exc:  # a collect callable or a source's metrics() failed: answer 500, keep serving
            log.error("metrics_collect_failed", error=f"{type(exc).__name__}: {exc}")
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, b"metrics collection failed\n", "text/plain")
            return
        self._reply(HTTPStatus.OK, body, CONTENT_TYPE_LATEST)

    def _healthz(self) -> None:
        web = self.server.web
        document = health(web.heartbeat, stale_after_s=web.stale_after_s, problems=web.problems)
        status = HTTPStatus.OK if document["status"] == "ok" else HTTPStatus.SERVICE_UNAVAILABLE
        self._reply(status, orjson.dumps(document), _JSON)

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("webserver_request", line=format % args)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, web: WebServer, tls: ssl.SSLContext | None) -> None:
        if ":" in web.host:
            self.address_family = socket.AF_INET6
        self.web = web
        self.tls = tls
        super().__init__((web.host, web.requested_port), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """On the request's own thread: the TLS handshake first, when TLS is on."""
        if self.tls is not None:
            request.settimeout(_REQUEST_TIMEOUT_S)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.debug("webserver_tls_handshake_failed", client=client_address[0], error=str(exc))
                return
        super().finish_request(request, client_address)


class WebServer:
    """Serves the endpoints from its own threads; `collect` runs once per scrape and `problems` once per health
    check, on a request's thread. `metrics_off`, when not empty, is why `/metrics` is not served (answered with a
    404); `versions` builds the `/versions` document."""

    def __init__(self, settings: WebserverConfig, collect: Callable[[], MetricsSnapshot], *, heartbeat: Heartbeat,
                 stale_after_s: float, problems: Callable[[], list[HealthProblem]] = list,
                 falco: FalcoMetricsReader | None = None, metrics_off: str = "",
                 versions: Callable[[], dict[str, Any]] = dict) -> None:
        self.settings = settings
        self.host = settings.listen_address
        self.requested_port = settings.listen_port
        self.healthz_path = settings.k8s_healthz_endpoint
        self.heartbeat = heartbeat
        self.stale_after_s = stale_after_s
        self.problems = problems
        self.metrics_off = metrics_off
        self.versions = versions
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ScrapeCollector(collect, heartbeat, falco))
        ProcessCollector(registry=self.registry)
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when the configuration said port 0)."""
        return self._server.server_address[1] if self._server is not None else self.requested_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.settings.ssl_enabled else 'http'}://{host}:{self.port}"

    def start(self) -> None:
        """Bind and serve; a ConfigError names the key to change when it cannot (address, port, certificate)."""
        tls = self._tls_context() if self.settings.ssl_enabled else None
        try:
            self._server = _HttpServer(self, tls)
        except OSError as exc:
            raise self._bind_error(exc) from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="webserver", daemon=True)
        self._thread.start()
        log.info("metrics_listening", url=self.url + METRICS_PATH, healthz=self.url + self.healthz_path,
                 metrics_served=not self.metrics_off)

    def _tls_context(self) -> ssl.SSLContext:
        path = self.settings.ssl_certificate
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(certfile=path)
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"webserver.ssl_certificate: cannot load '{path}': {reason}; give one PEM file holding "
                              "the certificate and its private key, or set webserver.ssl_enabled=false") from None
        return context

    def _bind_error(self, exc: OSError) -> ConfigError:
        where = f"{self.host}:{self.requested_port}"
        reason = exc.strerror or str(exc)
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            return ConfigError(f"webserver.listen_address: cannot listen on {where}: {reason}; give an address of "
                               "this host (127.0.0.1, 0.0.0.0, ::) or set webserver.enabled=false")
        return ConfigError(f"webserver.listen_port: cannot listen on {where}: {reason}; free the port, change "
                           "webserver.listen_port or webserver.listen_address, or set webserver.enabled=false")

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None

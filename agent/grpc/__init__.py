"""The gRPC alert API: numbered, spooled, filtered fan-out to subscribers, and Falco's legacy API.

Wiring: `AlertServer(spool_dir=..., socket_path=...)` owns the spool and the fan-out; add its
`output` (a `GrpcOutput`) to the agent's outputs, `start()` it, and `stop()` it at shutdown.
"""

from agent.grpc.client import AlertClient, make_filter
from agent.grpc.server import DEFAULT_SOCKET_PATH, AlertServer
from agent.grpc.subscriptions import Fanout, Gap, GrpcOutput
from agent.grpc.tls import ClientTls, ServerTls

__all__ = ["DEFAULT_SOCKET_PATH", "AlertClient", "AlertServer", "ClientTls", "Fanout", "Gap", "GrpcOutput",
           "ServerTls", "make_filter"]

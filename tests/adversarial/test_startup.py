"""What the configuration asks for and cannot be had at start ends the agent: exit 1, a message naming key and address.

A webhook, web server or gRPC address already taken, or a spool that cannot be written, is fatal at start even while
other sources could run, as systemd and Kubernetes expect; what started is stopped first.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent_process import Agent
from tests.support.queue_consumer import eventually

EXIT_S = 60


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that this test holds (listening) while the agent tries to use it."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


def failed_start(*args: str, tmp_path: Path) -> tuple[Agent, str]:
    """An agent started with `args` plus an audit log input (so it is not the webhook alone), run to its exit."""
    audit_log = tmp_path / "audit.log"
    audit_log.write_text("")
    agent = Agent("-o", "sources.k8s_audit.webhook.listen=127.0.0.1:0",
                  "-o", f"sources.k8s_audit.files.paths=[{audit_log}]", *args)
    code = agent.proc.wait(timeout=EXIT_S)
    assert code == 1, "".join(agent.stderr)
    assert eventually(lambda: any(line.startswith("falco-agent: ") for line in agent.stderr))
    message = next(line for line in agent.stderr if line.startswith("falco-agent: "))
    assert not (agent.state / "grpc.sock").exists(), "the gRPC server that started was not stopped"
    return agent, message


def test_a_taken_webhook_address_ends_the_start_though_another_source_runs(taken_port: int, tmp_path: Path) -> None:
    """The webhook cannot listen: exit 1 naming sources.k8s_audit.webhook.listen and the address, not a retry loop."""
    agent, message = failed_start("-o", f"sources.k8s_audit.webhook.listen=127.0.0.1:{taken_port}",
                                  tmp_path=tmp_path)
    assert message.startswith(f"falco-agent: cannot start: sources.k8s_audit.webhook.listen: the k8s audit webhook "
                              f"cannot listen on 127.0.0.1:{taken_port}: ")
    assert '"agent_started"' not in "".join(agent.stderr)


def test_a_taken_webserver_port_ends_the_start(taken_port: int, tmp_path: Path) -> None:
    """The web server cannot listen: exit 1 naming webserver.listen_port and the address (no agent without its
    health endpoint)."""
    _, message = failed_start("-o", f"webserver.listen_port={taken_port}", tmp_path=tmp_path)
    assert message.startswith(f"falco-agent: cannot start: webserver.listen_port: cannot listen on "
                              f"127.0.0.1:{taken_port}: ")


def test_a_taken_grpc_address_ends_the_start(taken_port: int, tmp_path: Path) -> None:
    """gRPC cannot listen on its TCP address: exit 1 naming grpc.address and the address."""
    _, message = failed_start("-o", f"grpc.address=127.0.0.1:{taken_port}", "-o", "grpc.allow_insecure_tcp=true",
                              tmp_path=tmp_path)
    assert message.startswith(f"falco-agent: cannot start: grpc.address: cannot listen on 127.0.0.1:{taken_port}")


def test_an_unwritable_spool_ends_the_start(tmp_path: Path) -> None:
    """A spool folder that cannot be made (under a regular file; root writes anywhere else): exit 1 naming the key."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    spool = blocker / "spool"
    _, message = failed_start("-o", f"grpc.spool_dir={spool}", tmp_path=tmp_path)
    assert message == (f"falco-agent: cannot start: grpc.spool_dir: cannot write the spool in {spool}: Not a "
                       "directory; make it a writable directory or change the key\n")

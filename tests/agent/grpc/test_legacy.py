"""Falco's legacy API on the same server, used by a client built from Falco's own protos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from grpc_tools import protoc

from agent.grpc.server import AlertServer
from agent.priority import Priority
from tests.agent.grpc.conftest import WAIT_S, make_alert

pytestmark = pytest.mark.server
CLIENT = Path(__file__).with_name("falco_legacy_client.py")


@pytest.fixture(scope="module")
def legacy_stubs(reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python modules generated from the unmodified legacy protos in the shared reference folder."""
    protos = reference / "proto" / "falco-outputs-legacy"
    out = tmp_path_factory.mktemp("legacy_stubs")
    include = Path(protoc.__file__).parent / "_proto"
    status = protoc.main(["protoc", f"-I{protos}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}",
                          "outputs.proto", "schema.proto", "version.proto"])
    assert status == 0
    return out


def _client(stubs: Path, server: AlertServer, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(CLIENT), str(stubs), f"unix:{server.socket_path}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=WAIT_S * 2)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


class TestLegacyApi:
    def test_sub_delivers_every_alert_to_every_legacy_client(self, unix_server: AlertServer,
                                                             legacy_stubs: Path) -> None:
        """Two Falco clients on `sub` each receive all alerts (fan-out, not Falco's shared queue)."""
        clients = [_client(legacy_stubs, unix_server, "sub", "3") for _ in range(2)]
        try:
            for proc in clients:
                assert proc.stdout is not None and json.loads(proc.stdout.readline()) == {"ready": True}
            assert unix_server.fanout.wait_for_subscribers(2, WAIT_S)
            unix_server.output.emit(make_alert(0, priority=Priority.CRITICAL, source="k8s_audit",
                                               rule="Create privileged pod", tags=("k8s", "container")))
            unix_server.output.emit(make_alert(1, source="aws_cloudtrail"))
            unix_server.output.emit(make_alert(2))
            for proc in clients:
                responses = _lines(proc)
                assert [r["rule"] for r in responses] == ["Create privileged pod", "Rule 1", "Rule 2"]
                first = responses[0]
                assert first["priority"] == "CRITICAL"
                assert first["source"] == "k8s_audit" and first["sourceDeprecated"] == "K8S_AUDIT"
                assert first["outputFields"] == {"proc.name": "cat", "proc.pid": "0", "fd.name": "<NA>",
                                                 "container.privileged": "false",
                                                 "ka.req.pod.volumes.hostpath": "(/etc,/var)"}
                assert first["output"].endswith(": Critical alert number 0 (proc.name=cat)")
                assert first["hostname"] == "node-1" and first["tags"] == ["k8s", "container"]
                assert first["time"].startswith("2023-11-14T22:13:20")
                assert responses[1]["sourceDeprecated"] == "PLUGIN"
        finally:
            for proc in clients:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()

    def test_get_returns_retained_alerts(self, unix_server: AlertServer, legacy_stubs: Path) -> None:
        """`get` streams the retained alerts, oldest first, then ends."""
        for i in range(4):
            unix_server.output.emit(make_alert(i))
        responses = _lines(_client(legacy_stubs, unix_server, "get"))
        assert [r["output"].split(" ", 2)[2] for r in responses] == [
            f"alert number {i} (proc.name=cat)" for i in range(4)]
        assert {r["priority"] for r in responses} == {"WARNING"}

    def test_version_answers_in_falcos_shape(self, unix_server: AlertServer, legacy_stubs: Path) -> None:
        """`falco.version.service/version` returns the agent version split into semver parts."""
        (reply,) = _lines(_client(legacy_stubs, unix_server, "version"))
        assert reply["version"] == "0.1.0" and reply["minor"] == 1

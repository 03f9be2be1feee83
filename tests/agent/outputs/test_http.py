"""The HTTP output against a real local server: Falcosidekick JSON, retries, drops counted, TLS, close deadline."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
from structlog.testing import capture_logs

from agent import __version__
from agent.errors import ConfigError
from agent.outputs.async_writer import Backoff
from agent.outputs.http import HttpOptions, HttpOutput
from tests.agent.outputs.conftest import WAIT_S, deliver, emits_return, make_alert, receiver

pytestmark = pytest.mark.server

FAST = Backoff(initial_s=0.01, max_s=0.05)


def new_output(url: str, **options: Any) -> HttpOutput:
    settings: dict[str, Any] = {"iso8601": False, "timeout_s": 5.0, "max_queue": 100, "batch": False,
                                "close_timeout_s": WAIT_S, "backoff": FAST}
    return HttpOutput(url, **{**settings, **options})


class TestDelivery:
    def test_each_alert_is_posted_as_falco_json(self) -> None:
        """One POST per alert whose body is Falco's JSON alert object, with the configured headers."""
        with receiver() as server:
            output = new_output(server.url, options=HttpOptions(headers={"Authorization": "Bearer t0ken"}))
            try:
                for i in range(3):
                    output.emit(make_alert(i))
                output.flush()
                assert server.wait_for(lambda got: len(got) == 3)
            finally:
                output.close()
            assert [orjson.loads(r.body) for r in server.received] == [make_alert(i).falco_json() for i in range(3)]
            headers = server.received[0].headers
            assert headers["Authorization"] == "Bearer t0ken"
            assert headers["Content-Type"] == "application/json"
            assert output.counters()["delivered"] == 3

    def test_batch_posts_a_json_array(self) -> None:
        """With batch, alerts queued together go in one request as a JSON array."""
        with receiver() as server:
            output = new_output(server.url, batch=True, iso8601=True)
            try:
                for i in range(5):
                    output.emit(make_alert(i))
                assert output.wait_idle(WAIT_S)
            finally:
                output.close()
            posted = [alert for r in server.received for alert in orjson.loads(r.body)]
            assert posted == [make_alert(i).falco_json(iso8601=True) for i in range(5)]

    @pytest.mark.parametrize("batch", [False, True])
    def test_alert_with_values_orjson_refuses_is_delivered_and_so_are_the_next(self, batch: bool) -> None:
        """A 65-bit integer and a non-UTF-8 name in one alert do not stop the writer: it and the next arrive."""
        odd = make_alert(1)
        odd.output_fields.update({"proc.pid": 2**64, "fd.name": b"/tmp/\xff".decode("utf-8", "surrogateescape")})
        with receiver() as server:
            output = new_output(server.url, batch=batch)
            try:
                for alert in (make_alert(0), odd, make_alert(2)):
                    output.emit(alert)
                assert output.wait_idle(WAIT_S)
            finally:
                output.close()
            bodies = [orjson.loads(r.body) for r in server.received]
            posted = [alert for body in bodies for alert in body] if batch else bodies
            assert [a["output_fields"]["proc.pid"] for a in posted] == [0, str(2**64), 2]
            assert posted[1]["output_fields"]["fd.name"] == "/tmp/\ufffd"
            assert output.counters()["delivered"] == 3

    def test_bad_request_is_rejected_not_retried(self) -> None:
        """A 400 reply means the alert will never be accepted: counted as rejected, sent once."""
        with receiver(lambda index: 400) as server:
            output = new_output(server.url)
            try:
                output.emit(make_alert(1))
                assert output.wait_idle(WAIT_S)
            finally:
                output.close()
            assert len(server.received) == 1
            assert output.counters()["rejected"] == 1


class TestOutage:
    def test_failures_then_recovery_lose_nothing(self) -> None:
        """While the endpoint answers 503 alerts wait in the queue; once it recovers all arrive, in order."""
        with receiver(lambda index: 503 if index < 4 else 200) as server:
            output = new_output(server.url)
            try:
                for i in range(10):
                    output.emit(make_alert(i))
                assert server.wait_for(lambda got: len([r for r in got if r.status == 200]) == 10)
            finally:
                output.close()
            bodies = [orjson.loads(r.body)["output_fields"]["proc.pid"] for r in server.accepted()]
            assert bodies == list(range(10))
            assert output.counters() == {"delivered": 10, "dropped": 0, "rejected": 0, "failed_attempts": 4,
                                         "queue_depth": 0}

    def test_overflow_during_outage_is_dropped_and_counted(self) -> None:
        """Past the queue's capacity alerts are dropped, counted and logged with their count; the rest arrive."""
        healthy = False
        with receiver(lambda index: 200 if healthy else 503) as server:
            output = new_output(server.url, max_queue=4)
            try:
                with capture_logs() as logs:
                    output.emit(make_alert(0))
                    assert server.wait_for(lambda got: len(got) >= 1)  # alert 0 is in flight, being retried
                    # emit never waits for the failing endpoint: it only becomes healthy once they returned
                    assert emits_return(output, [make_alert(i) for i in range(1, 8)])
                    healthy = True
                    assert server.wait_for(lambda got: len([r for r in got if r.status == 200]) == 5)
                    output.emit(make_alert(8))  # ends the burst of drops
                    assert output.wait_idle(WAIT_S)
            finally:
                output.close()
            pids = [orjson.loads(r.body)["output_fields"]["proc.pid"] for r in server.accepted()]
            assert pids == [0, 1, 2, 3, 4, 8]
            assert output.dropped == 3 and output.delivered == 6 and output.failed_attempts >= 1
            dropped_logs = [e for e in logs if e["event"] == "output_alerts_dropped"]
            assert [e["count"] for e in dropped_logs] == [3]

    def test_close_gives_up_at_its_deadline(self) -> None:
        """With nobody listening, close returns after its deadline and counts what it could not deliver."""
        with socket.socket() as closed:  # bound and never listening: refused, and no other test can take the port
            closed.bind(("127.0.0.1", 0))
            output = new_output(f"http://127.0.0.1:{closed.getsockname()[1]}/alerts", close_timeout_s=0.2)
            for i in range(5):
                output.emit(make_alert(i))
            started = time.monotonic()
            output.close()
            assert time.monotonic() - started < WAIT_S
        assert output.dropped == 5 and output.delivered == 0 and output.failed_attempts >= 1

    def test_close_delivers_what_is_queued(self) -> None:
        """Close waits for the queued alerts to be delivered before it returns."""
        with receiver(lambda index: 503 if index < 2 else 200) as server:
            output = new_output(server.url)
            for i in range(20):
                output.emit(make_alert(i))
            output.close()
            assert len(server.accepted()) == 20 and output.delivered == 20


class TestTls:
    @pytest.fixture
    def pki(self, tmp_path: Path) -> dict[str, Any]:
        ca = trustme.CA()
        server_cert = ca.issue_cert("127.0.0.1")
        client_cert = ca.issue_cert("falco-agent")
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        client_cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_cert.configure_cert(context)
        ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
        return {"server": context, "ca_file": str(tmp_path / "ca.pem"), "client": str(tmp_path / "client.pem")}

    def test_mutual_tls_delivers(self, pki: dict[str, Any]) -> None:
        """Over https the server is verified against ca_file and the client presents its certificate."""
        with receiver(tls=pki["server"]) as server:
            output = new_output(server.url, ca_file=pki["ca_file"], client_cert=pki["client"])
            try:
                output.emit(make_alert(1))
                assert server.wait_for(lambda got: len(got) == 1)
            finally:
                output.close()
            assert output.delivered == 1

    def test_unknown_server_certificate_is_retried_not_delivered(self, pki: dict[str, Any]) -> None:
        """Without the CA the server's certificate fails verification: counted as failed attempts, then dropped."""
        with receiver(tls=pki["server"]) as server:
            output = new_output(server.url, client_cert=pki["client"], close_timeout_s=0.2)
            with capture_logs() as logs:
                output.emit(make_alert(1))
                output.close()
            assert output.delivered == 0 and output.dropped == 1 and output.failed_attempts >= 1
            assert any(e["event"] == "output_delivery_failed" for e in logs)

    def test_unreadable_ca_file_fails_at_start(self, tmp_path: Path) -> None:
        """A CA file that cannot be read is a configuration error naming the TLS options."""
        with pytest.raises(ConfigError, match="ca_file"):
            new_output("https://127.0.0.1:1/alerts", ca_file=str(tmp_path / "nope.pem"))

    def test_url_needs_a_scheme(self) -> None:
        """A URL that is not http(s) is refused when the output is built."""
        with pytest.raises(ConfigError, match="http:// or https://"):
            new_output("127.0.0.1:8080/alerts")


class TestFalcoOptions:
    def test_user_agent_names_the_agent_and_its_version_unless_configured(self) -> None:
        """Without user_agent the requests say falco-agent/<version>; with it, what it says."""
        with receiver() as server:
            custom = HttpOptions(user_agent="falcosecurity/falco")
            outputs = [new_output(server.url), new_output(server.url, options=custom)]
            try:
                for output in outputs:
                    output.emit(make_alert(1))
                    assert output.wait_idle(WAIT_S)
            finally:
                for output in outputs:
                    output.close()
            assert [r.headers["User-Agent"] for r in server.received] == [f"falco-agent/{__version__}",
                                                                          "falcosecurity/falco"]

    @pytest.mark.parametrize("batch", [False, True])
    def test_compressed_uploads_are_gzip_bodies(self, batch: bool) -> None:
        """compress_uploads: the body on the wire is gzip (Content-Encoding: gzip, a Content-Length smaller than the
        JSON), which the server reads back as the same alerts."""
        with receiver() as server:
            deliver(new_output(server.url, batch=batch, options=HttpOptions(compress=True)), 20)
            for request in server.received:  # aiohttp's server hands the body over decompressed
                assert request.headers["Content-Encoding"] == "gzip"
                assert int(request.headers["Content-Length"]) < len(request.body)
            bodies = [orjson.loads(r.body) for r in server.received]
            posted = [alert for body in bodies for alert in body] if batch else bodies
            assert posted == [make_alert(i).falco_json() for i in range(20)]

    @pytest.mark.parametrize("keep_alive", [True, False])
    def test_keep_alive_reuses_one_connection_or_closes_each(self, keep_alive: bool) -> None:
        """keep_alive: requests share one connection; without it each request asks the server to close."""
        with receiver() as server:
            deliver(new_output(server.url, options=HttpOptions(keep_alive=keep_alive)), 3, one_by_one=True)
            connection = {r.headers.get("Connection", "keep-alive").lower() for r in server.received}
            assert connection == ({"keep-alive"} if keep_alive else {"close"})
            assert len(server.received) == 3

    def test_echo_prints_the_server_answers_on_stdout(self, capfd: pytest.CaptureFixture[str]) -> None:
        """echo: each answer of the server is written on stdout, one line each, whatever its status."""
        with receiver(lambda index: 200 if index else 400) as server, capture_logs():  # logs: not on stdout
            deliver(new_output(server.url, options=HttpOptions(echo=True)), 2, one_by_one=True)
        assert capfd.readouterr().out == "not now\nok\n"

    def test_no_echo_keeps_stdout_for_alerts(self, capfd: pytest.CaptureFixture[str]) -> None:
        """Without echo nothing of the server's answers reaches stdout."""
        with receiver() as server:
            deliver(new_output(server.url), 1)
        assert capfd.readouterr().out == ""


class TestCaPath:
    def test_server_verified_against_a_ca_folder(self, tmp_path: Path) -> None:
        """ca_path: a folder of hashed CA certificates (as c_rehash makes) verifies the server."""
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("openssl is needed to hash the CA's name")
        ca = trustme.CA()
        folder = tmp_path / "certs"
        folder.mkdir()
        ca.cert_pem.write_to_path(str(folder / "ca.pem"))
        subject_hash = subprocess.run([openssl, "x509", "-hash", "-noout", "-in", str(folder / "ca.pem")],
                                      check=True, capture_output=True, text=True).stdout.strip()
        (folder / f"{subject_hash}.0").symlink_to("ca.pem")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        with receiver(tls=context) as server:
            output = new_output(server.url, ca_path=str(folder))
            try:
                output.emit(make_alert(1))
                assert output.wait_idle(WAIT_S)
            finally:
                output.close()
            assert output.delivered == 1 and len(server.received) == 1

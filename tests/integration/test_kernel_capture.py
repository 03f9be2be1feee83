"""`falco-agent capture` records real syscalls; `falco-agent replay` reproduces the detection from the file
alone, with the same fields, as a user without root would."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.agent_process import REPO
from tests.support.kernel import require_probe

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.slow]


def test_a_captured_detection_replays_without_the_kernel(tmp_path: Path, reference: Path) -> None:
    require_probe()
    capture = tmp_path / "capture.jsonl"
    recorder = subprocess.Popen([sys.executable, "-m", "agent.cli", "capture", str(capture), "--seconds", "60"],
                                cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while b'"kind":"seeded"' not in (capture.read_bytes() if capture.exists() else b""):
            assert time.monotonic() < deadline and recorder.poll() is None, "the capture never started"
            time.sleep(0.1)
        subprocess.run(["cat", "/etc/shadow"], stdout=subprocess.DEVNULL, check=True)
        time.sleep(1.0)  # let the source read the ring buffer
    finally:
        recorder.terminate()
        _, stderr = recorder.communicate(timeout=60)
    assert recorder.returncode == 0, stderr
    assert "records in" in stderr and "0 lost in the kernel" in stderr

    replay = subprocess.run([sys.executable, "-m", "agent.cli", "replay", "-r",
                             str(reference / "rules" / "falco_rules.yaml"), str(capture)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr
    alerts = [json.loads(line) for line in replay.stdout.splitlines()]
    shadow = [a for a in alerts if a["rule"] == "Read sensitive file untrusted"
              and a["output_fields"]["proc.name"] == "cat"]
    assert shadow, [a["rule"] for a in alerts]
    fields = shadow[0]["output_fields"]
    assert fields["fd.name"] == "/etc/shadow" and fields["proc.cmdline"] == "cat /etc/shadow"
    assert fields["user.name"] == "root"

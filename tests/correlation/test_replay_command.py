"""`falco-agent replay` as a process on an audit or CloudTrail file plus a kernel capture: the documented
way to test a correlation rule gives the correlation alert, with fields of both steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.correlation.conftest import REPO, SHIPPED, STREAMS
from tests.support.kernel_scenarios import kernel_pods, stream_files

EXEC_CORRELATION = "Shell, Secret Read Or Outbound Connection After Exec Into Pod"
IMDS_CORRELATION = "Instance Credentials Used Outside The Node After Metadata Access From Pod"


def replay_command(*inputs: Path) -> tuple[list[dict[str, Any]], str]:
    """The JSON alerts `falco-agent replay -r rules/correlation.yaml INPUT...` prints, and its stderr."""
    done = subprocess.run([sys.executable, "-m", "agent.cli", "replay", "-r", str(SHIPPED), *map(str, inputs)],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_audit_file_then_kernel_capture_raise_the_exec_correlation(tmp_path: Path) -> None:
    """An exec session in the audit file and a shell in the capture, replayed together, give one alert."""
    stream = STREAMS / "exec_shell.positive.jsonl"
    files = stream_files(stream, tmp_path)
    assert [f.name.endswith(".kernel-capture.jsonl") for f in files] == [False, True]
    alerts, stderr = replay_command(*files)
    [alert] = alerts
    [in_pod] = kernel_pods(stream)
    fields = alert["output_fields"]
    assert alert["rule"] == EXEC_CORRELATION and alert["source"] == "syscall" and alert["priority"] == "Warning"
    assert fields["session.ka.user.name"] == "alice@example.com"
    assert fields["session.ka.target.name"] == "api-6d8f9c7b5d-x2k4l"
    assert fields["activity.proc.cmdline"] == "bash -i" and fields["activity.container.id"] == in_pod.short_id
    assert alert["time"].startswith("2024-06-03T10:00:03")
    assert "0 records skipped" in stderr


def test_kernel_capture_then_cloudtrail_file_raise_the_metadata_correlation(tmp_path: Path) -> None:
    """A metadata-service connection in the capture and an instance-role call in CloudTrail give one alert."""
    files = stream_files(STREAMS / "imds_credentials.positive.jsonl", tmp_path)
    assert [f.name.endswith(".kernel-capture.jsonl") for f in files] == [True, False]
    alerts, _ = replay_command(*files)
    [alert] = alerts
    fields = alert["output_fields"]
    assert alert["rule"] == IMDS_CORRELATION and alert["source"] == "aws_cloudtrail"
    assert fields["fetched.k8s.pod.name"] == "builder-x1y2z" and fields["fetched.proc.name"] == "curl"
    assert fields["used.ct.srcip"] == "198.51.100.99"


@pytest.mark.parametrize("stream", ["exec_shell.wrong_key", "exec_shell.outside_window"])
def test_near_miss_files_replay_quietly(stream: str, tmp_path: Path) -> None:
    """The same files for another pod, or past the window, replay without an alert."""
    alerts, stderr = replay_command(*stream_files(STREAMS / f"{stream}.jsonl", tmp_path))
    assert alerts == [] and "0 records skipped" in stderr

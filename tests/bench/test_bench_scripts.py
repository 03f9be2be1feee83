"""The benchmark scripts still run, evaluate everything they offer, and end with their JSON line.

Speed is not judged here; honesty is: each script exits 1 when the engine evaluated less than it was offered
or alerting samples raised nothing (bench/accounting.py), and its figures say how much it evaluated.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from plugin_build import missing_compiler

from tests.support.kernel import require_probe

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("script", "args", "keys"), [
    ("engine.py", ["--events", "300"], {"k8s_audit_events_per_s", "cloudtrail_ratio_vs_parse", "rss_mb",
                                        "k8s_audit_evaluated", "cloudtrail_evaluated", "cloudtrail_alerts"}),
    ("alert_output.py", ["--events", "300"],
     {"append_output_us_per_alert", "json_every_key_ratio", "stdout_unbuffered_ratio", "appended_evaluated"}),
    ("cloudtrail.py", ["--records", "600", "--s3-records", "300"],
     {"local_records_per_s", "local_ratio_vs_baseline", "local_evaluated", "s3_c8_evaluated"}),
    ("k8saudit_webhook.py", ["--batches", "4", "--batch-size", "10"], {"events_per_s", "p99_ms", "drops", "evaluated"}),
    ("kernel_records.py", ["--pairs", "300", "--repeats", "1"],
     {"decode_us_per_record", "state_us_per_record", "evaluate_us_per_openat", "evaluate_unguarded_us_per_openat",
      "total_us_per_openat", "guarded_evaluated", "unguarded_evaluated"}),
    ("correlation.py", ["--events", "400", "--keys", "400"],
     {"correlations_events_per_s", "correlation_cost_vs_rules", "bytes_per_live_key", "live_keys"}),
    ("whole_agent.py", ["--seconds", "1", "--k8s-rate", "200", "--cloudtrail-rate", "100", "--batch-size", "20",
                        "--records-per-file", "20"],
     {"events_per_s", "alerts_per_s", "agent_cpu_percent", "peak_rss_mb", "drops"}),
    pytest.param("plugins.py", ["--events", "300"],
                 {"plugin_us_per_event", "plugin_abi_extract_us_per_event", "json_us_per_event", "plugin_evaluated",
                  "json_evaluated", "plugin_extract_calls_per_event"},
                 marks=pytest.mark.skipif(missing_compiler() is not None, reason=f"{missing_compiler()}")),
])
def test_bench_script_prints_its_figures(script: str, args: list[str], keys: set[str], reference: Path) -> None:
    """Each benchmark runs on tiny inputs and its last line is one JSON object with its figures."""
    assert keys <= set(_figures(script, args))


@pytest.mark.root
@pytest.mark.bpf
def test_kernel_bench_runs_the_mixed_workload(reference: Path) -> None:
    """The kernel benchmark's mixed workload reaches the sensitive-file rule (its probe alerted) and each phase
    says what was offered, filtered in the kernel, delivered and lost, with the agent's CPU and the slowdown, against
    the generator alone and with empty programs on the same tracepoints; with the prefilter on, the half of the opens
    no rule can match (/etc/hostname) stay in the kernel, with it off none do."""
    require_probe()
    figures = _figures("kernel.py", ["--workload", "mixed", "--rates", "2000", "--seconds", "1", "--exec-rate", "5"])
    assert figures["workload"] == "mixed"
    assert figures["opened_files"] == ["/etc/hostname", "/etc/shadow"]
    assert figures["empty_probe_slowdown"] == pytest.approx(
        figures["generator_alone_per_s"] / figures["generator_with_empty_probe_per_s"], abs=0.01)
    off, on = figures["runs"]["off"], figures["runs"]["on"]
    for run in (off, on):
        assert run["relevance_probe_alerts"] >= 1
        assert {"kernel_prefilter", "generator_slowdown", "slowdown_beyond_empty_probe",
                "agent_peak_rss_mb"} <= set(run)
        assert run["slowdown_beyond_empty_probe"] == pytest.approx(
            figures["generator_with_empty_probe_per_s"] / run["generator_with_agent_per_s"], abs=0.01)
        [phase] = run["phases"]
        assert {"offered_events", "openat_filtered_in_kernel", "records_delivered", "records_lost",
                "agent_cpu_percent", "bpf_ns_per_open_close"} <= set(phase)
        assert phase["evaluated"] + phase["records_lost"] + phase["openat_filtered_in_kernel"] \
            >= phase["offered_events"] > 0
    assert off["phases"][0]["openat_filtered_in_kernel"] == 0
    assert on["phases"][0]["openat_filtered_in_kernel"] >= on["phases"][0]["offered_events"] // 2


def _figures(script: str, args: list[str]) -> dict[str, Any]:
    """The JSON figures `script` ends with, run with `args`; it must exit 0."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args, "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    figures: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures

"""Rules files that used to exhaust memory or kill the reload thread (issue 13, case 4).

Reported: a 620-byte YAML alias bomb took 3 GB in `rules validate` and 4 GB in a live reload (items of no known
kind were expanded too); one condition of 760k `or` terms (20 MB) passed 4 GB; 990 chained `not` or 3,000 chained
macros raised RecursionError in `validate` and killed the reload thread for good. Each is now refused with a Falco
code naming file, line and item, quickly and in bounded memory, by `rules validate` and by a running agent, which
keeps its rules, raises an internal alert and picks up the next valid edit. Two more bombs found on the way (a macro
built from two uses of the previous one, a list inlining another list many times) are refused the same way.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.engine.macros import MAX_CONDITION_LENGTH
from agent.engine.parser import MAX_DEPTH, MAX_NODES
from agent.engine.reader import MAX_FILE_BYTES, MAX_YAML_NODES
from tests.agent.test_runtime import alert_until, exec_event, post, reloading_agent, rules_text, write_atomically
from tests.support.agent_process import REPO
from tests.support.process_memory import GUARD_CPU_S, guard, memory_mib

#: `rules validate` on any of these: done within this many seconds (most of it is the CLI's start)...
VALIDATE_S = 30.0
#: ...with a peak RSS under this (the CLI alone takes about 60 MB; the alias bomb used to take 3 GB).
VALIDATE_RSS_MB = 250
#: A running agent fed every one of them, twice each, keeps its peak RSS under this (it used to pass 4 GB).
AGENT_RSS_MB = 400


def rule(condition: str) -> str:
    return (f"- rule: r\n  desc: d\n  condition: {condition}\n  output: o\n  priority: WARNING\n"
            "  source: k8s_audit\n")


def alias_bomb() -> str:
    """620 bytes: nine levels of nine aliases each, 9**9 scalars once expanded; all but the first level in items of
    no known kind, which the reader used to expand all the same."""
    lines = ["- list: " + "ha" * 9, "  items: &a [" + ", ".join(["ha" * 9] * 9) + "]"]
    previous = "a"
    for level in "bcdefghi":
        lines.append(f"- level{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]")
        previous = level
    text = "\n".join(lines) + "\n"
    assert len(text) == 620
    return text


def or_terms(term: Callable[[int], str]) -> Callable[[], str]:
    """One condition of 760,000 `or` terms."""
    return lambda: rule(" or ".join(term(i) for i in range(760_000)))


def chained_not() -> str:
    return rule("not " * 990 + "ka.verb=create")


def chained_macros() -> str:
    """3,000 macros, each the previous one and one more check: the expanded rule nests 3,000 levels."""
    macros = ["- macro: m0\n  condition: ka.verb=create\n"]
    macros += [f"- macro: m{i}\n  condition: m{i - 1} and ka.verb!=v{i}\n" for i in range(1, 3000)]
    return "".join(macros) + rule("m2999")


def doubling_macros() -> str:
    """40 macros, each two uses of the previous one: 2**40 checks once expanded."""
    macros = ["- macro: m0\n  condition: ka.verb=create\n"]
    macros += [f"- macro: m{i}\n  condition: m{i - 1} or m{i - 1}\n" for i in range(1, 40)]
    return "".join(macros) + rule("m39")


def list_product() -> str:
    """A list of 100,000 values and a list naming it 100,000 times: 10**10 values once inlined."""
    values = ", ".join(f"v{i:05d}" for i in range(100_000))
    return (f"- list: l1\n  items: [{values}]\n- list: l2\n  items: [{', '.join(['l1'] * 100_000)}]\n"
            + rule("ka.verb in (l2)"))


@dataclass(frozen=True)
class Bomb:
    make: Callable[[], str]
    code: str
    line: int
    item: str
    message: str


BOMBS = {
    "alias bomb": Bomb(alias_bomb, "LOAD_ERR_YAML_PARSE", 7, "",
                       f"YAML has more than {MAX_YAML_NODES} nodes once aliases are expanded"),
    "760k terms, 20 MB": Bomb(or_terms(lambda i: f"ka.user.name=u{i:06d}"), "LOAD_ERR_FILE_READ", 0, "",
                              f"bytes, more than the limit of {MAX_FILE_BYTES}"),
    "760k terms, 14 MB": Bomb(or_terms(lambda i: f"ka.verb={i}"), "LOAD_ERR_COMPILE_CONDITION", 3, "rule 'r'",
                              f"condition is longer than {MAX_CONDITION_LENGTH} characters"),
    "990 chained not": Bomb(chained_not, "LOAD_ERR_COMPILE_CONDITION", 3, "rule 'r'",
                            f"condition nests deeper than {MAX_DEPTH} levels"),
    "3000 chained macros": Bomb(chained_macros, "LOAD_ERR_VALIDATE", 202, "macro 'm100'",
                                f"condition nests deeper than {MAX_DEPTH} levels once macro 'm99' is expanded"),
    "doubling macros": Bomb(doubling_macros, "LOAD_ERR_VALIDATE", 26, "macro 'm12'",
                            f"condition has more than {MAX_NODES} checks and operators once macros are expanded"),
    "list product": Bomb(list_product, "LOAD_ERR_COMPILE_CONDITION", 7, "rule 'r'",
                         f"list 'l2' is longer than {MAX_CONDITION_LENGTH} characters"),
}


@dataclass(frozen=True)
class Run:
    exit_code: int
    output: dict[str, Any]
    seconds: float
    maxrss_mb: float


#: `falco-agent` in-process, writing its peak RSS (VmHWM of the process after exec) to stderr as it exits; wait4's
#: ru_maxrss would also count the pages the child shared with this process between fork and exec.
MEASURED_CLI = """\
import atexit, runpy, sys
from pathlib import Path
atexit.register(lambda: sys.stderr.write(next(line for line in Path("/proc/self/status").read_text().splitlines()
                                              if line.startswith("VmHWM:"))))
sys.argv[0] = "falco-agent"
runpy.run_module("agent.cli", run_name="__main__")
"""


def validate(path: Path) -> Run:
    """`falco-agent rules validate --json` in a subprocess, timed, with its peak RSS."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", MEASURED_CLI, "rules", "validate", "--json", str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    guard(proc.pid)
    out, err = proc.communicate(timeout=GUARD_CPU_S * 2)
    seconds = time.monotonic() - started
    hwm_kb = int(err.decode().rsplit("VmHWM:", 1)[1].split()[0])
    return Run(proc.returncode, orjson.loads(out or b"{}"), seconds, hwm_kb / 1024)


@pytest.mark.parametrize("name", BOMBS)
def test_validate_refuses_each_bomb_quickly_in_bounded_memory(name: str, tmp_path: Path) -> None:
    """Exit 1 with the one error naming file, line, item, Falco code and the limit; no RecursionError, no GBs."""
    bomb = BOMBS[name]
    path = tmp_path / "rules.yaml"
    path.write_text(bomb.make())
    run = validate(path)
    assert run.exit_code == 1, run
    [error] = run.output["falco_load_results"][0]["errors"]
    innermost = error["context"]["locations"][-1]
    item = f"{innermost['item_type']} '{innermost['item_name']}'" if innermost["item_name"] else ""
    # Falco's JSON counts lines from 0; the bombs name them from 1 (0: the whole file).
    assert (innermost["position"]["name"], innermost["position"]["line"], item, error["code"]) == (
        str(path), max(bomb.line - 1, 0), bomb.item, bomb.code)
    assert bomb.message in error["message"]
    assert run.seconds < VALIDATE_S and run.maxrss_mb < VALIDATE_RSS_MB, run


def test_a_huge_rules_file_is_refused_without_being_read_whole(tmp_path: Path) -> None:
    """A 4 GiB (sparse) file: refused after reading one byte past the limit, in bounded memory."""
    path = tmp_path / "rules.yaml"
    with path.open("wb") as stream:
        stream.truncate(4 << 30)
    run = validate(path)
    assert run.exit_code == 1, run
    [error] = run.output["falco_load_results"][0]["errors"]
    assert error["code"] == "LOAD_ERR_FILE_READ"
    assert error["message"] == f"rules file is {4 << 30} bytes, more than the limit of {MAX_FILE_BYTES}"
    assert run.seconds < VALIDATE_S and run.maxrss_mb < VALIDATE_RSS_MB, run


def test_a_running_agent_survives_every_bomb_and_takes_the_next_valid_edit(tmp_path: Path) -> None:
    """The rules file is replaced by each bomb in turn, noticed by the file watch and then forced by SIGHUP: each
    reload fails with an internal alert naming the error, the old rules keep alerting, memory stays bounded, and a
    valid edit afterwards is picked up by the same reload thread."""
    rules = tmp_path / "rules.yaml"
    write_atomically(rules, rules_text(1))
    agent = reloading_agent(rules)
    guard(agent.proc.pid)
    seen: list[dict[str, Any]] = []
    internal: list[dict[str, Any]] = []
    n = 0
    try:
        url = agent.wait_for_log("webhook_listening")["url"]
        for bomb in BOMBS.values():
            write_atomically(rules, bomb.make())
            internal.append(alert_until(agent, seen, lambda a: a["source"] == "internal", timeout_s=60))
            agent.proc.send_signal(signal.SIGHUP)
            internal.append(alert_until(agent, seen, lambda a: a["source"] == "internal", timeout_s=60))
            assert post(url, exec_event(n)) == 200
            old = alert_until(agent, seen, lambda a: a["source"] == "k8s_audit")
            assert (old["rule"], old["output_fields"]["ka.target.name"]) == ("Exec v1", f"cart-{n}")
            n += 1
        peak_mb = memory_mib(agent.proc.pid)["VmHWM"]
        write_atomically(rules, rules_text(2))
        agent.wait_for_log("rules_reloaded")
        assert post(url, exec_event(n)) == 200
        new = alert_until(agent, seen, lambda a: a["source"] == "k8s_audit")
    finally:
        code, _ = agent.stop()
    assert code == 0
    assert (new["rule"], new["output_fields"]["ka.target.name"]) == ("Exec v2", f"cart-{n}")
    assert peak_mb < AGENT_RSS_MB, peak_mb
    expected = [bomb for bomb in BOMBS.values() for _ in ("file_changed", "signal")]
    assert len(internal) == len(expected)
    for alert, bomb in zip(internal, expected, strict=True):
        assert alert["rule"] == "Falco Agent Rules Reload Failed" and alert["priority"] == "Error"
        fields = alert["output_fields"]
        assert (fields["internal.file"], fields["internal.line"], fields["internal.code"]) == (
            str(rules), bomb.line, bomb.code)
        assert bomb.message in fields["internal.error"]

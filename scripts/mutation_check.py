"""Plant known bugs in the hot paths one at a time and check that the tests catch each one.

Each mutation names a file, an exact snippet and its replacement, and the tests that must fail once it is planted.
The working tree is never touched: the project (without `.venv`) is copied to a temporary folder once, each mutation
is applied to the copy, its tests run there with this venv's Python (pytest puts the copy first on the path), and
the file is restored before the next one.

    .venv/bin/python scripts/mutation_check.py              # every mutation
    .venv/bin/python scripts/mutation_check.py --list       # their names
    .venv/bin/python scripts/mutation_check.py noise_dedup_window_boundary time_text_minutes_seconds

Exit 0 when every planted bug was caught (its tests failed), 1 when one survived, 2 when a mutation no longer
applies to the code (its snippet is gone or ambiguous: update it here along with the change that moved it) or its
tests fail before any bug is planted.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXIT_ALL_CAUGHT, EXIT_SURVIVED, EXIT_STALE = 0, 1, 2
# A mutation whose tests hang is caught too (the suite would time out in CI), but must not stall this script.
TIMEOUT_S = 600


@dataclass(frozen=True, slots=True)
class Mutation:
    name: str
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...]
    why: str


MUTATIONS = (
    Mutation("sqs_delete_before_all_objects_queued", "sources/cloudtrail/sqs.py",
             "is_complete = message.is_submitted and message.pending == 0", "is_complete = message.pending == 0",
             ("tests/sources/cloudtrail/test_sqs.py",),
             "a multi-object message deleted after its first batch: a crash loses the rest"),
    Mutation("webhook_503_without_retry_after", "sources/k8saudit/webhook.py",
             'headers = {"Retry-After": "1"} if status in (429, 503) else None', "headers = None",
             ("tests/sources/k8saudit/test_webhook.py",),
             "the API server is not told to back off"),
    Mutation("noise_summary_first_time_not_minimum", "agent/noise.py",
             "self.first_ns = min(self.first_ns, alert.ts_ns)", "self.first_ns = self.first_ns",
             ("tests/agent/test_noise.py",),
             "out-of-order repeats report a wrong first time"),
    Mutation("noise_dedup_window_boundary", "agent/noise.py",
             "if window is not None and now < window.due_s:", "if window is not None and now <= window.due_s:",
             ("tests/agent/test_noise.py",),
             "an alert exactly at the end of a window is folded"),
    Mutation("forwarder_uuid_without_seq", "examples/forwarders/webhook.py",
             'f"{alert.hostname}/{alert.seq}"', 'f"{alert.hostname}"',
             ("tests/examples/test_forwarders.py",),
             "every alert of a host gets the same uuid: receivers deduplicate them away"),
    Mutation("time_text_minutes_seconds", "agent/generic_fields.py",
             'return _local_seconds(seconds, "%H:%M:%S")', 'return _local_seconds(seconds, "%H:%S:%M")',
             ("tests/agent/engine/test_alert.py",),
             "alert times print minutes and seconds swapped"),
    Mutation("operator_startswith_as_endswith", "agent/engine/operators.py",
             "return lambda v: v.startswith(const)", "return lambda v: v.endswith(const)",
             ("tests/agent/engine",),
             "`startswith` conditions test the end of the value"),
    Mutation("priority_threshold_exclusive", "agent/engine/engine.py",
             "if rule.enabled and rule.priority <= self.min_priority:",
             "if rule.enabled and rule.priority < self.min_priority:",
             ("tests/agent/engine",),
             "rules at exactly the configured priority are dropped"),
    Mutation("queued_output_emit_waits_for_delivery", "agent/outputs/async_writer.py",
             "        self._writer.offer(self._item(alert))\n",
             "        self._writer.offer(self._item(alert))\n        self._writer.wait_idle(30)\n",
             ("tests/agent/outputs/test_http.py", "-k", "overflow_during_outage"),
             "a slow HTTP, NATS or program destination blocks the engine loop"),
    Mutation("spool_resume_repeats_last_seen", "agent/grpc/spool.py",
             "if seq >= want:\n                        if seq > want:",
             "if seq >= want - 1:\n                        if seq > want:",
             ("tests/agent/grpc",),
             "a subscriber resuming after N receives N again"),
    Mutation("prefilter_fold_keeps_only_own_bits", "sources/kernel/prefilter.py",
             "                    entries[key] = entries.get(key, 0) | bit",
             "                    entries[key] = bit",
             ("tests/agent/test_syscall_prefilter.py",),
             "two rules naming one path: the kernel keeps the opens only the first one's terms reject"),
    Mutation("guard_or_refuses_what_one_branch_refuses", "agent/engine/string_bounds.py",
             "        return frozenset().union(*trues), frozenset.intersection(*falses)",
             "        return frozenset().union(*trues), frozenset().union(*falses)",
             ("tests/agent/engine/test_rule_guards.py",),
             "`not A or B`: a rule skipped for A's value although B could still make it true"),
    Mutation("link_renames_a_path_the_rules_name", "sources/kernel/watched_files.py",
             "        return path in self.exact or path.startswith(self.prefixes)",
             "        return False",
             ("tests/sources/kernel/state/test_fd_events.py",),
             "an open of /bin/ls renamed /usr/bin/ls: a rule on /bin/ no longer sees it"),
    Mutation("close_fast_path_ignores_a_rule_on_close", "sources/kernel/state/kernel_state.py",
             '                or "close" in forwarded):',
             "                or False):",
             ("tests/sources/kernel/state/test_fd_events.py",),
             "closes applied undecoded although a rule reads them: its alerts never come"),
    Mutation("inline_startswith_as_endswith", "agent/engine/operators.py",
             '"startswith": "{v}.startswith({c})"', '"startswith": "{v}.endswith({c})"',
             ("tests/agent/engine",),
             "`startswith` conditions written into generated code test the end of the value"),
    Mutation("inline_fd_name_of_a_failed_connect", "sources/kernel/fd_fields.py",
             "\"{payload}.record.type != 'connect'\"", '"True"',
             ("tests/sources/kernel/test_inline_fields.py",),
             "a refused connect's fd.name read inline as its socket's, not the address it was asked for"),
    Mutation("open_fast_path_skips_procfs_links", "sources/kernel/state/paths.py",
             ' and "/proc" not in path', "",
             ("tests/sources/kernel/state/test_fd_links.py",),
             "a reopen through /proc/self/fd/N keeps the /proc name: rules on the file it reaches miss it"),
    Mutation("never_rule_by_the_wrong_operator", "agent/engine/ruleset.py",
             "decisive = isinstance(expr, Or)", "decisive = isinstance(expr, And)",
             ("tests/agent/engine/test_ruleset.py",),
             "a rule that may match is judged one no event can match, and is never evaluated"),
    Mutation("evaluator_index_value_of_another_field", "agent/engine/evaluator.py",
             '{local} = key[{local[2:]}]', '{local} = key[0]',
             ("tests/agent/engine/test_evaluator.py",),
             "a generated evaluator reads an index field's value from another field's place in the key"),
    Mutation("time_compared_as_the_wrong_number", "agent/engine/codegen.py",
             'f"({number} == {int(constant)})"', 'f"({number} == {int(constant) + 1})"',
             ("tests/agent/engine/test_inline_reads.py",),
             "`jevt.rawtime = N`, compared as a number, compares with another number"),
    Mutation("walk_keeps_a_gap_all_texts_refuses", "sources/k8saudit/extraction.py",
             'gap = ("continue",) if texts is present_texts else ("return None",)', 'gap = ("continue",)',
             ("tests/sources/k8saudit/test_inline_fields.py",),
             "a list field that needs every element's value skips an element lacking it"),
    Mutation("index_implies_a_check_of_another_field", "agent/engine/ruleset.py",
             "if values is None or values.cofinite or not values.values:",
             "if values is not None and (values.cofinite or not values.values):",
             ("tests/agent/engine/test_ruleset.py",),
             "a check on a field the index does not hold is taken as decided by the index"),
    Mutation("time_index_forgets_the_times_rules_refuse", "agent/engine/ruleset.py",
             "for bound in bounds for v in bound.values\n",
             "for bound in bounds if not bound.cofinite for v in bound.values\n",
             ("tests/agent/engine/test_ruleset.py",),
             "an event at a time a rule refuses (`jevt.rawtime != 5`) is indexed as any other time, and meets it"),
    Mutation("given_key_kept_whole", "agent/engine/ruleset.py",
             'f"    key = {given}"', '"    key = key"',
             ("tests/correlation/test_loader.py",),
             "correlations narrow events by the index key of the engine's rule set, with its times, not their own"),
    Mutation("inline_list_field_empty_not_missing", "sources/k8saudit/extraction.py",
             'inline = "(tuple({tmp}) if ({tmp} := {walk}({payload})) else None)"',
             'inline = "(tuple({tmp}) if ({tmp} := {walk}({payload})) is not None else None)"',
             ("tests/sources/k8saudit/test_inline_fields.py",),
             "a k8s list field read inline is an empty list, not missing, when no element has the value"),
)


def pytest(tests: tuple[str, ...], copy: Path) -> tuple[bool, str]:
    """Run `tests` in `copy`: (passed, last line of the output)."""
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=copy, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return False, f"tests still running after {TIMEOUT_S} s"
    lines = done.stdout.strip().splitlines() or ["(no output)"]
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return done.returncode == 0, "; ".join([*failed, lines[-1]])


def run(mutation: Mutation, copy: Path) -> tuple[bool, float, str]:
    """Plant the mutation in `copy`, run its tests there, restore the file: (caught, seconds, last output line)."""
    target = copy / mutation.path
    pristine = target.read_text(encoding="utf-8")
    target.write_text(pristine.replace(mutation.original, mutation.mutated, 1), encoding="utf-8")
    started = time.monotonic()
    try:
        passed, tail = pytest(mutation.tests, copy)
    finally:
        target.write_text(pristine, encoding="utf-8")
    return not passed, time.monotonic() - started, tail


def stale(mutations: list[Mutation]) -> list[str]:
    """The mutations whose snippet is not exactly once in its file."""
    out = []
    for mutation in mutations:
        count = (ROOT / mutation.path).read_text(encoding="utf-8").count(mutation.original)
        if count != 1:
            out.append(f"{mutation.name}: the snippet is in {mutation.path} {count} times, not once; update it")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    args = parser.parse_args(argv)
    by_name = {m.name: m for m in MUTATIONS}
    if args.list:
        for mutation in MUTATIONS:
            print(f"{mutation.name:<40} {mutation.path}: {mutation.why}")
        return EXIT_ALL_CAUGHT
    unknown = [name for name in args.names if name not in by_name]
    if unknown:
        print(f"unknown mutation(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return EXIT_STALE
    chosen = [by_name[name] for name in args.names] or list(MUTATIONS)
    problems = stale(chosen)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_STALE
    survived = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        copy = Path(tmp) / "project"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", ".mypy_cache",
                                                                  ".ruff_cache", ".pytest_cache", ".coverage"))
        shared = ROOT.parent / "shared"
        if shared.is_dir():  # the reference samples many tests read from ../shared: without them they skip
            (Path(tmp) / "shared").symlink_to(shared)
        # A failure only counts as catching a bug when the same tests pass without it.
        for tests in dict.fromkeys(m.tests for m in chosen):
            passed, tail = pytest(tests, copy)
            if not passed:
                print(f"the tests {' '.join(tests)} fail with no mutation planted ({tail}): fix them first",
                      file=sys.stderr)
                return EXIT_STALE
        for index, mutation in enumerate(chosen, 1):
            caught, seconds, tail = run(mutation, copy)
            verdict = "caught" if caught else "SURVIVED"
            print(f"[{index}/{len(chosen)}] {mutation.name}: {verdict} in {seconds:.0f} s ({tail})", flush=True)
            if not caught:
                survived.append(mutation.name)
    if survived:
        print(f"{len(survived)} of {len(chosen)} planted bugs went through the tests: {', '.join(survived)}",
              file=sys.stderr)
        return EXIT_SURVIVED
    print(f"all {len(chosen)} planted bugs were caught")
    return EXIT_ALL_CAUGHT


if __name__ == "__main__":
    sys.exit(main())

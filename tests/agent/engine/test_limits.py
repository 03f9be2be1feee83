"""Bounds on rules input: each refused with a Falco code and a message naming file, line, item and the limit.

The whole-file bombs of the report (and `rules validate` and a running agent on them) are in
tests/adversarial/test_rules_files.py; here each bound is met just below and just above.
"""

from __future__ import annotations

import time

import pytest

from agent.builtin_sources import new_engine
from agent.engine import rule_compiler
from agent.engine.macros import MAX_CONDITION_LENGTH
from agent.engine.parser import MAX_DEPTH, MAX_NODES
from agent.engine.reader import MAX_FILE_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES
from tests.agent.engine.conftest import Lab

UPSTREAM = "/work/shared/reference/rules"


def problem(lab: Lab, text: str) -> tuple[str, int, str, str]:
    """(code, line, item, message) of the single error loading `text` as f1.yaml."""
    error = lab.error(text)
    item = f"{error.location.item_kind} '{error.location.item_name}'" if error.location.item_kind else ""
    return error.code.value, error.location.line, item, error.message


def chain(count: int, condition: str, *, first: str = "t.name = x") -> str:
    """Macros m0..m{count-1}: m0 is `first`, each next one `condition` with `{prev}` naming the previous macro."""
    text = f"- macro: m0\n  condition: {first}\n"
    return text + "".join(f"- macro: m{i}\n  condition: {condition.format(prev=f'm{i - 1}')}\n"
                          for i in range(1, count))


class TestFileAndYaml:
    def test_a_file_over_the_size_limit_is_not_read(self, lab: Lab) -> None:
        """16 MiB is the most a rules file may hold; the error names the file and both sizes."""
        assert lab.load("#" * (MAX_FILE_BYTES - 1) + "\n")[1].successful
        code, line, _, message = problem(lab, "#" * MAX_FILE_BYTES + "\n")
        assert (code, line) == ("LOAD_ERR_FILE_READ", 0)
        assert message == f"rules file is {MAX_FILE_BYTES + 1} bytes, more than the limit of {MAX_FILE_BYTES}"

    def test_aliases_within_the_budget_work(self, lab: Lab) -> None:
        """Anchors and aliases are ordinary YAML: a list reusing another's items through an alias loads."""
        engine = lab.loaded("- list: a\n  items: &shared [p, q]\n- list: b\n  items: *shared\n"
                            + lab.rule("t.name in (b)"))
        assert lab.fired(engine, name="q") == ["r"]

    def test_an_alias_bomb_is_refused_before_it_expands(self, lab: Lab) -> None:
        """Ten aliases of ten aliases...: refused at the alias that passes 250,000 nodes, in no time."""
        lines = ["- list: l\n  items: &a0 [" + ", ".join(["x"] * 10) + "]\n"]
        lines += [f"- k{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9)]
        started = time.monotonic()
        code, line, item, message = problem(lab, "".join(lines))
        assert time.monotonic() - started < 1
        assert (code, line, item) == ("LOAD_ERR_YAML_PARSE", 7, "")
        assert message == (f"YAML has more than {MAX_YAML_NODES} nodes once aliases are expanded (an alias counts "
                           "as the nodes it repeats)")

    def test_aliases_of_a_long_text_are_counted_in_characters(self, lab: Lab) -> None:
        """A few aliases of a 1 MB scalar repeat 16 MiB of text: refused, though they are few nodes."""
        text = f"- list: l\n  items: [&s {'y' * 1_000_000}]\n- k: [" + ", ".join(["*s"] * 20) + "]\n"
        code, line, _, message = problem(lab, text)
        assert (code, line) == ("LOAD_ERR_YAML_PARSE", 3)
        assert message.startswith(f"YAML has more than {MAX_FILE_BYTES} characters of text once aliases")

    def test_an_alias_inside_the_node_it_names_is_refused(self, lab: Lab) -> None:
        """pyyaml would compose a cycle, which nothing could then walk."""
        code, line, _, message = problem(lab, "- list: l\n  items: &loop [a, *loop]\n")
        assert (code, line, message) == ("LOAD_ERR_YAML_PARSE", 2, "alias '*loop' is inside the node it refers to")

    def test_nesting_past_the_limit_is_refused(self, lab: Lab) -> None:
        """Collections nest at most 100 levels (the document's sequence and the item's mapping are two); at 100 the
        file is merely of the wrong shape."""
        at_limit = "- list: l\n  items: " + "[" * (MAX_YAML_DEPTH - 2) + "]" * (MAX_YAML_DEPTH - 2) + "\n"
        assert problem(lab, at_limit)[0] == "LOAD_ERR_YAML_VALIDATE"
        code, line, _, message = problem(lab, at_limit.replace("[", "[[", 1).replace("]", "]]", 1))
        assert (code, line, message) == ("LOAD_ERR_YAML_PARSE", 2, "YAML nests collections deeper than 100 levels")


class TestConditions:
    def test_a_condition_over_the_length_limit_is_refused(self, lab: Lab) -> None:
        """1 MiB is the most a condition may hold (a rule's is parsed inside parentheses: two characters more)."""
        value = "v" * (MAX_CONDITION_LENGTH - len("(t.name in ())"))
        assert lab.load(lab.rule(f"t.name in ({value})"))[1].successful
        code, line, item, message = problem(lab, lab.rule(f"t.name in ({value}w)"))
        assert (code, line, item) == ("LOAD_ERR_COMPILE_CONDITION", 4, "rule 'r'")
        assert message == f"condition is longer than {MAX_CONDITION_LENGTH} characters"

    def test_list_substitution_past_the_limit_is_refused(self, lab: Lab) -> None:
        """A short condition naming a list many times is measured as it grows, and names the list."""
        prelude = "- list: l\n  items: [" + ", ".join(f"value{i:04d}" for i in range(1000)) + "]\n"
        code, line, item, message = problem(lab, prelude + lab.rule("t.name in (" + ", ".join(["l"] * 100) + ")"))
        assert (code, line, item) == ("LOAD_ERR_COMPILE_CONDITION", 6, "rule 'r'")
        assert message == f"condition is longer than {MAX_CONDITION_LENGTH} characters once list 'l' is substituted"

    def test_a_list_inlining_another_too_often_is_refused_unbuilt(self, lab: Lab) -> None:
        """Inlining multiplies: the inlined items stop at the limit instead of filling memory."""
        prelude = ("- list: a\n  items: [" + ", ".join(f"a{i:05d}" for i in range(10_000)) + "]\n"
                   "- list: b\n  items: [" + ", ".join(["a"] * 10_000) + "]\n")
        code, _, item, message = problem(lab, prelude + lab.rule("t.name in (b)"))
        assert (code, item) == ("LOAD_ERR_COMPILE_CONDITION", "rule 'r'")
        assert message == f"list 'b' is longer than {MAX_CONDITION_LENGTH} characters"

    def test_lists_inline_one_level_as_in_falco(self, lab: Lab) -> None:
        """A list naming a list that names a third takes the second's own items: the third's name stays a value."""
        engine = lab.loaded("- list: c\n  items: [deep]\n- list: b\n  items: [c, mid]\n- list: a\n  items: [b]\n"
                            + lab.rule("t.name in (a)"))
        assert [lab.fired(engine, name=n) for n in ("mid", "c", "deep")] == [["r"], ["r"], []]

    def test_list_substitution_is_linear(self, lab: Lab) -> None:
        """100,000 uses of a list in one condition substitute in about a second, not in hours."""
        started = time.monotonic()
        engine = lab.loaded("- list: l\n  items: [x]\n" + lab.rule("t.name in (" + ", ".join(["l"] * 100_000) + ")"))
        assert time.monotonic() - started < 20
        assert lab.fired(engine, name="x") == ["r"]

    def test_chained_not_past_the_limit_is_a_syntax_error(self, lab: Lab) -> None:
        """990 chained `not` used to raise RecursionError; each `not` is a level of nesting, and so are the
        parentheses a rule's condition is parsed in: the 100th `not` is one too many."""
        code, line, item, message = problem(lab, lab.rule("not " * 990 + "t.name = x"))
        assert (code, line, item) == ("LOAD_ERR_COMPILE_CONDITION", 4, "rule 'r'")
        assert message.startswith(f"condition nests deeper than {MAX_DEPTH} levels at 1:398 of the condition")

    def test_too_many_checks_is_a_syntax_error(self, lab: Lab) -> None:
        """More than 5,000 checks and operators in one condition."""
        code, _, item, message = problem(lab, lab.rule(" or ".join(["t.name = x"] * MAX_NODES)))
        assert (code, item) == ("LOAD_ERR_COMPILE_CONDITION", "rule 'r'")
        assert message.startswith(f"condition has more than {MAX_NODES} checks and operators at ")


class TestMacros:
    def test_a_rule_at_the_nesting_limit_compiles_and_evaluates(self, lab: Lab) -> None:
        """99 macros each negating the previous one: 100 levels, compiled and evaluated right."""
        engine = lab.loaded(chain(MAX_DEPTH, "not {prev}") + lab.rule(f"m{MAX_DEPTH - 1}"))
        assert (lab.fired(engine, name="x"), lab.fired(engine, name="y")) == ([], ["r"])

    def test_nesting_past_the_limit_through_macros_is_refused(self, lab: Lab) -> None:
        """One level more, in the rule: the error names the rule and the macro that goes too deep."""
        code, line, item, message = problem(lab, chain(MAX_DEPTH, "not {prev}") + lab.rule(f"not m{MAX_DEPTH - 1}"))
        assert (code, line, item) == ("LOAD_ERR_VALIDATE", 2 * MAX_DEPTH + 4, "rule 'r'")
        assert message == f"condition nests deeper than {MAX_DEPTH} levels once macro 'm{MAX_DEPTH - 1}' is expanded"

    def test_3000_chained_macros_are_refused_at_the_first_too_deep(self, lab: Lab) -> None:
        """Each macro the previous one and a check: macro m100 is where the nesting passes 100 levels."""
        code, line, item, message = problem(lab, chain(3000, "{prev} and t.num > 1") + lab.rule("m2999"))
        assert (code, line, item) == ("LOAD_ERR_VALIDATE", 202, "macro 'm100'")
        assert message == f"condition nests deeper than {MAX_DEPTH} levels once macro 'm99' is expanded"

    def test_a_plain_chain_of_3000_macros_loads(self, lab: Lab) -> None:
        """Macros that only rename the previous one add no nesting: like Falco, the agent takes them."""
        engine = lab.loaded(chain(3000, "{prev}") + lab.rule("m2999"))
        assert lab.fired(engine, name="x") == ["r"]

    def test_macros_reached_through_too_many_macros_are_refused(self, lab: Lab) -> None:
        """Redefined macros can chain from early to late names; expanding them goes at most 100 macros deep."""
        text = "".join(f"- macro: m{i}\n  condition: t.name = x\n" for i in range(151))
        text += "".join(f"- macro: m{i}\n  condition: m{i + 1}\n" for i in range(150))
        code, _, item, message = problem(lab, text + lab.rule("m0"))
        assert (code, item) == ("LOAD_ERR_VALIDATE", "macro 'm0'")
        assert message == f"macro 'm{MAX_DEPTH}' is reached through more than {MAX_DEPTH} nested macros"

    def test_a_doubling_macro_is_measured_not_built(self, lab: Lab) -> None:
        """Forty macros each twice the previous: 2**40 checks are refused at the first macro past 5,000, at once."""
        started = time.monotonic()
        code, line, item, message = problem(lab, chain(40, "{prev} or {prev}") + lab.rule("m39"))
        assert time.monotonic() - started < 5
        assert (code, line, item) == ("LOAD_ERR_VALIDATE", 26, "macro 'm12'")
        assert message == f"condition has more than {MAX_NODES} checks and operators once macros are expanded"

    def test_a_load_compiles_a_bounded_total(self, lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
        """Rules repeating a large macro add up; past the total of a load the rule that crosses it is named. (The
        bound is lowered here: at 100,000 the test would spend its time compiling what comes below it.)"""
        monkeypatch.setattr(rule_compiler, "MAX_LOAD_NODES", 100)
        prelude = "- macro: big\n  condition: " + " or ".join(f"t.name = v{i}" for i in range(20)) + "\n"
        rules = "".join(lab.rule("big", name=f"r{i}") for i in range(4))
        assert lab.load(prelude + rules)[1].successful  # 4 x 21
        code, _, item, message = problem(lab, prelude + rules + lab.rule("big", name="r4"))
        assert (code, item) == ("LOAD_ERR_VALIDATE", "rule 'r4'")
        assert message == "the rules add up to more than 100 checks and operators once macros are expanded"


def test_the_upstream_rules_load_unchanged() -> None:
    """Falco's own rules files, far below every bound, load with no error."""
    for files in (["falco_rules.yaml"], ["k8s_audit_rules.yaml"], ["aws_cloudtrail_rules.yaml"]):
        result = new_engine().load_rules_files([f"{UPSTREAM}/{name}" for name in files])
        assert result.successful, result.as_text()

"""Property-based tests for the rules reader, collector and compiler: no rules text makes loading raise.

Whatever the text (broken YAML, anchors and aliases, any item shape, any condition), loading returns a LoadResult
whose problems carry Falco codes; the composer that replaced pyyaml's builds the same node graphs as pyyaml.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.engine.engine import Engine, RulesText
from agent.engine.load_result import ErrorCode, LoadResult, WarningCode
from agent.engine.parser import ConditionSyntaxError, parse_condition
from agent.engine.reader import KNOWN_KEYS, YamlLimitError, compose_all
from tests.agent.engine.conftest import sample_source

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces of conditions: fields, operators, values, macro and list names, and the tokens that nest.
CONDITION_TOKENS = (
    "t.name", "t.num", "t.tags", "t.args[1]", "t.label[app]", "json.value[/a]", "ka.user", "evt.num",
    "=", "==", "!=", "<", ">=", "in", "intersects", "pmatch", "contains ", "glob ", "regex ", "exists", "startswith ",
    "oneof ", "and ", "or ", "not ", "not(", "(", ")", ",", "val(", "tolower(", "len(", "x", "'q w'", '"\\x41"',
    "12", "-3.5e+2", "0x1f", "m1", "m2", "l1", "l2", "<NA>", " ", "\n", "\t", "[", "]", "'", '"', "\\",
)
conditions = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(CONDITION_TOKENS), max_size=25).map("".join),
)

# Pieces of YAML: indentation, item keys, flow collections, anchors, aliases, tags, documents, quoting.
YAML_TOKENS = (
    "- ", "  ", "\n", "rule: ", "macro: ", "list: ", "items: ", "condition: ", "output: ", "desc: ", "priority: ",
    "source: ", "override: ", "append: ", "exceptions: ", "enabled: ", "tags: ", "required_engine_version: ",
    "required_plugin_versions: ", "name: ", "fields: ", "values: ", "[", "]", "{", "}", ", ", ": ", "&a ", "&b ",
    "*a", "*b", "!!str ", "!!map ", "! ", "---\n", "...\n", "|\n", ">-\n", "'", '"', "#", "? ", "<<: ", "null",
    "true", "0755", "r", "m1", "l1", "t.name = x", "WARNING", "k8s_audit", "test", "\t", "%", "@",
)
yaml_texts = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(YAML_TOKENS), max_size=40).map("".join),
)

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12), conditions)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8) | st.sampled_from(["name", "fields",
                                                                                                 "comps", "values"]),
                                                        children, max_size=4),
    ),
    max_leaves=8,
)
ALL_KEYS = sorted({key for keys in KNOWN_KEYS.values() for key in keys})


@st.composite
def items(draw: st.DrawFn) -> dict[str, Any]:
    """A rules item: a kind key with a name (or anything), then known keys of any kind, with values of any shape."""
    item: dict[str, Any] = {}
    kind = draw(st.sampled_from(["rule", "macro", "list", "required_engine_version", "required_plugin_versions",
                                 "correlation", "other"]))
    item[kind] = draw(st.sampled_from(["r", "m1", "m2", "l1", "l2", "0.10.0", "x y"]) | values)
    for key in draw(st.lists(st.sampled_from(ALL_KEYS), unique=True, max_size=7)):
        item[key] = draw(conditions if key in ("condition", "output") else values)
    return item


documents = st.lists(items(), max_size=6).map(lambda docs: yaml.safe_dump(docs, allow_unicode=True))


def load(*texts: str) -> LoadResult:
    engine = Engine()
    engine.add_source(sample_source())
    return engine.load_rules([RulesText(f"f{i}.yaml", text) for i, text in enumerate(texts, start=1)])


def assert_a_load_result(result: LoadResult) -> None:
    assert isinstance(result, LoadResult)
    for problem in result.problems:
        assert isinstance(problem.code, ErrorCode | WarningCode)
        assert problem.message and problem.location.file.startswith("f")
        assert problem.as_text()
    assert result.successful == (not result.errors)


def dump(node: yaml.Node) -> Any:
    """A node graph as plain data (positions included), to compare two composers."""
    def mark(m: Any) -> Any:
        return None if m is None else (m.line, m.column, m.index)

    if isinstance(node, yaml.ScalarNode):
        return ("scalar", node.tag, node.value, node.style, mark(node.start_mark), mark(node.end_mark))
    assert isinstance(node, yaml.CollectionNode)
    children = ([dump(child) for child in node.value] if isinstance(node, yaml.SequenceNode)
                else [(dump(key), dump(value)) for key, value in node.value])
    return (type(node).__name__, node.tag, node.flow_style, mark(node.start_mark), mark(node.end_mark), children)


def pyyaml_dump(text: str) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [dump(node) for node in yaml.compose_all(text, Loader=loader)]


class TestFuzz:
    @FUZZ
    @given(yaml_texts)
    def test_any_text_loads_to_a_result(self, text: str) -> None:
        """Broken YAML, odd shapes, anchors and aliases: loading reports problems, it never raises."""
        assert_a_load_result(load(text))

    @FUZZ
    @given(st.lists(documents, min_size=1, max_size=3))
    def test_any_items_load_to_a_result(self, texts: list[str]) -> None:
        """Well-formed YAML whose items hold any keys and values of any shape, over several files."""
        assert_a_load_result(load(*texts))

    @FUZZ
    @given(st.lists(conditions, min_size=1, max_size=4), conditions)
    def test_any_conditions_load_to_a_result(self, macro_conditions: list[str], condition: str) -> None:
        """Macros and a rule with any condition text: a result with errors or warnings, whatever the text."""
        text = "- list: l1\n  items: [a, 'b c', l2]\n- list: l2\n  items: []\n"
        text += "".join(f"- macro: m{i}\n  condition: {yaml.safe_dump(c).strip()}\n"
                        for i, c in enumerate(macro_conditions, start=1) if c.strip())
        text += f"- rule: r\n  desc: d\n  condition: {yaml.safe_dump(condition).strip()}\n  output: o\n" \
                "  priority: WARNING\n  source: test\n"
        assert_a_load_result(load(text))

    @FUZZ
    @given(conditions)
    def test_the_parser_raises_only_syntax_errors(self, text: str) -> None:
        """A condition parses to a tree or raises ConditionSyntaxError, nothing else."""
        try:
            parse_condition(text)
        except ConditionSyntaxError as exc:
            assert exc.message and exc.pos.line >= 1 and exc.pos.column >= 1

    @FUZZ
    @given(yaml_texts)
    def test_the_composer_builds_what_pyyaml_builds(self, text: str) -> None:
        """Same node graphs, tags, styles and positions as pyyaml's composer, or an error from both; the one
        difference is an alias inside the node it names, which pyyaml composes as a cycle and the reader refuses."""
        try:
            ours = [dump(node) for node in compose_all(text)]
        except YamlLimitError as exc:
            assert "is inside the node it refers to" in str(exc.problem)
            return
        except yaml.YAMLError:
            try:
                pyyaml_dump(text)
            except yaml.YAMLError:
                return
            raise
        assert ours == pyyaml_dump(text)

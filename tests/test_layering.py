"""The walls between layers: the engine knows no source, a source knows no engine or output."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "agent/engine": ("sources", "agent.outputs", "agent.grpc", "agent.runtime", "agent.cli", "agent.builtin_sources"),
    "sources": ("agent.outputs", "agent.grpc", "agent.engine", "agent.runtime", "agent.cli"),
    "agent/outputs": ("sources", "agent.engine"),
    # A plugin is a source: the API and the registry know no output, server or command line.
    "agent/plugins": ("agent.outputs", "agent.grpc", "agent.runtime", "agent.cli"),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _modules(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(folder: str) -> None:
    """No module of a layer imports a layer it must not know about."""
    offences = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in _modules(folder)
        for name in _imports(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[folder])
    ]
    assert not offences, "\n".join(offences)


def test_engine_never_names_a_source() -> None:
    """The engine holds no source name as a string: sources are registered as data.

    The one exception is the language's own default: a rule without `source:` is a syscall rule.
    """
    names = ("'syscall'", '"syscall"', "k8s_audit", "aws_cloudtrail")
    offences = [
        f"{path.relative_to(REPO)}:{number} mentions {name}"
        for path in _modules("agent/engine")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        for name in names
        if name in line and not line.startswith("DEFAULT_SOURCE = ")
    ]
    assert not offences, "\n".join(offences)

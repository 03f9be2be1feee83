"""The checked-in generated modules match what scripts/gen_protos.py makes from proto/ now."""

from __future__ import annotations

import importlib.util
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

from packaging.version import Version

from tests.test_lock import PINS

REPO = Path(__file__).resolve().parents[3]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_protos", module)
    spec.loader.exec_module(module)
    return module


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and "__pycache__" not in p.parts}


def test_checked_in_stubs_are_fresh(tmp_path: Path) -> None:
    """Editing a .proto, or bumping grpcio-tools in the lock, without `make protos` fails here, naming the files."""
    locked = {pin.name: pin.version for pin in PINS}["grpcio-tools"]
    assert Version(metadata.version("grpcio-tools")) == locked, "the venv is older than requirements.lock"
    gen = _load_script()
    gen.generate(tmp_path / "_gen")
    fresh, checked_in = _tree(tmp_path / "_gen"), _tree(REPO / "agent" / "grpc" / "_gen")
    stale = sorted(name for name in fresh.keys() | checked_in.keys() if fresh.get(name) != checked_in.get(name))
    assert not stale, f"stale generated files (run `make protos`): {stale}"


def test_generated_modules_import_inside_the_package() -> None:
    """The generated gRPC modules import their messages from agent.grpc._gen, not a top-level package."""
    from agent.grpc._gen.falco.outputs import outputs_pb2_grpc
    from agent.grpc._gen.falco_agent.v1 import alerts_pb2_grpc

    assert callable(alerts_pb2_grpc.AlertServiceStub)
    assert callable(outputs_pb2_grpc.serviceStub)
    assert "falco" not in sys.modules and "falco_agent" not in sys.modules

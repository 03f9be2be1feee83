"""requirements.lock pins what pyproject.toml asks for, and the venv holds what the lock pins.

Editing a range in pyproject.toml without `make lock` fails here, naming the package, so a fresh
clone never installs something nobody tested.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
PYPROJECT = REPO / "pyproject.toml"
# uv's annotation of a direct dependency in the lock.
DIRECT = "falco-agent (pyproject.toml)"
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>\S+)(?:\s*;\s*(?P<marker>[^\\]+?))?\s*\\?$")


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    marker: Marker | None
    hashes: int
    direct: bool

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def _pins(text: str) -> list[Pin]:
    """One pin per entry: its first line names the version (and marker); its indented lines hold the hashes and
    uv's `# via` annotation."""
    pins = []
    for block in re.split(r"\n(?=\S)", text):
        match = _PIN.match(block.split("\n", 1)[0])
        if match is None:
            continue  # the header comment
        marker = match["marker"]
        pins.append(Pin(canonicalize_name(match["name"]), Version(match["version"]), Marker(marker) if marker else None,
                        hashes=block.count("--hash=sha256:"), direct=DIRECT in block))
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]


PINS = _pins(LOCK.read_text())
DECLARED = _declared()


def test_lock_parses_into_many_pins() -> None:
    assert len(PINS) > 50
    assert {"grpcio", "grpcio-tools", "protobuf", "pytest", "mypy", "uv"} <= {p.name for p in PINS}


def test_every_pin_has_hashes() -> None:
    unhashed = [p.name for p in PINS if p.hashes == 0]
    assert not unhashed, f"pins without --hash (run `make lock`): {unhashed}"


@pytest.mark.parametrize("requirement", DECLARED, ids=str)
def test_each_declared_dependency_is_pinned_within_its_range(requirement: Requirement) -> None:
    name = canonicalize_name(requirement.name)
    pins = [p for p in PINS if p.name == name]
    assert pins, f"{requirement} is in pyproject.toml but not in requirements.lock: run `make lock`"
    outside = [str(p.version) for p in pins if p.version not in requirement.specifier]
    assert not outside, f"requirements.lock pins {name}=={outside}, outside {requirement}: run `make lock`"


def test_lock_names_no_direct_dependency_pyproject_dropped() -> None:
    declared = {canonicalize_name(r.name) for r in DECLARED}
    stale = sorted({p.name for p in PINS if p.direct} - declared)
    assert not stale, f"requirements.lock still has {stale} as direct dependencies: run `make lock`"


def test_the_venv_holds_the_locked_versions() -> None:
    """A venv built from an older lock is caught here rather than by a puzzling failure elsewhere."""
    wrong = []
    for pin in PINS:
        if not pin.applies():
            continue
        try:
            installed = Version(metadata.version(pin.name))
        except metadata.PackageNotFoundError:
            wrong.append(f"{pin.name} missing")
            continue
        if installed != pin.version:
            wrong.append(f"{pin.name} {installed} (lock: {pin.version})")
    assert not wrong, f"the venv differs from requirements.lock (run `make test` to rebuild it): {wrong}"


def _minimum(name: str) -> Version:
    requirement = next(r for r in DECLARED if canonicalize_name(r.name) == name)
    floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    assert floors, f"{requirement} needs a >= floor"
    return max(floors)


def test_checked_in_stubs_run_on_the_oldest_versions_pyproject_allows() -> None:
    """Generated modules refuse a runtime older than their generator: pyproject's floors must not be lower."""
    gen = REPO / "agent" / "grpc" / "_gen"
    grpc_versions = {Version(m) for f in gen.rglob("*_pb2_grpc.py")
                     for m in re.findall(r"GRPC_GENERATED_VERSION = '([^']+)'", f.read_text())}
    proto_versions = {Version(".".join(m)) for f in gen.rglob("*_pb2.py")
                      for m in re.findall(r"Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", f.read_text())}
    assert grpc_versions and proto_versions
    assert max(grpc_versions) <= _minimum("grpcio"), f"stubs need grpcio>={max(grpc_versions)}"
    assert max(proto_versions) <= _minimum("protobuf"), f"stubs need protobuf>={max(proto_versions)}"

"""Container ids from /proc/<pid>/cgroup, for each runtime in cgroup v1 and v2 layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sources.kernel.state.cgroup import container_from_cgroup, short_id
from sources.kernel.state.cgroup_index import CgroupIndex

ID = "3f1b0c2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"


@pytest.mark.parametrize(("text", "runtime"), [
    (f"12:memory:/docker/{ID}\n11:cpu:/docker/{ID}\n", "docker"),
    (f"0::/system.slice/docker-{ID}.scope\n", "docker"),
    (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope\n",
     "containerd"),
    (f"0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope\n", "cri-o"),
    (f"5:pids:/kubepods/besteffort/pod9d2/{ID}\n", None),
    (f"0::/machine.slice/libpod-{ID}.scope/container\n", "podman"),
    (f"0::/machine.slice/libpod-{ID}.scope\n", "podman"),
    (f"1:name=systemd:/libpod_parent/libpod-{ID}\n", "podman"),
])
def test_container_id_patterns(text: str, runtime: str | None) -> None:
    """Every runtime's cgroup path yields the full 64-hex id (and the runtime when the path names it)."""
    found = container_from_cgroup(text)
    assert found is not None and found.id == ID and found.runtime == runtime


@pytest.mark.parametrize("text", [
    "0::/user.slice/user-1000.slice/session-2.scope\n",
    "0::/\n",
    f"0::/machine.slice/libpod-conmon-{ID}.scope\n",
    "",
])
def test_host_processes_have_no_container(text: str) -> None:
    """Host cgroups, and a container monitor's scope, name no container."""
    assert container_from_cgroup(text) is None


def test_short_id() -> None:
    """container.id is `host` on the host and the first 12 characters otherwise."""
    assert short_id("") == "host" and short_id(ID) == ID[:12]


def test_cgroup_ids_name_containers_by_directory_inode(tmp_path: Path) -> None:
    container = "c" * 64
    (tmp_path / "docker" / container).mkdir(parents=True)
    (tmp_path / "system.slice").mkdir()
    index = CgroupIndex(tmp_path)
    assert index.container_of((tmp_path / "docker" / container).stat().st_ino) == container
    assert index.container_of((tmp_path / "system.slice").stat().st_ino) == ""
    later = tmp_path / "kubepods" / ("d" * 64)
    later.mkdir(parents=True)  # a container started after the first walk is found on the miss
    assert index.container_of(later.stat().st_ino) == "d" * 64
    assert index.container_of(999_999_999) is None
    assert CgroupIndex(None).container_of(5) is None

"""fs.path.*: the path a successful filesystem call acted on, made absolute against the cwd as libsinsp does."""

from __future__ import annotations

from typing import Any

import pytest

from agent.event import Event
from sources.kernel.fspath_fields import lexically_normal
from tests.sources.kernel.state_fixtures import Stream, extract

FIELDS = ("fs.path.name", "fs.path.nameraw", "fs.path.source", "fs.path.sourceraw", "fs.path.target",
          "fs.path.targetraw")


def _values(event: Event) -> dict[str, Any]:
    return {name: extract(event, name) for name in FIELDS}


class TestOnePathCalls:
    def test_relative_open_is_made_absolute_against_the_cwd(self) -> None:
        """bash (cwd /home/alice) opens notes/../todo.txt: the name is folded under the cwd, the raw one as passed."""
        event = Stream().open(200, "notes/../todo.txt", res=4)
        assert _values(event) == {"fs.path.name": "/home/alice/todo.txt", "fs.path.nameraw": "notes/../todo.txt",
                                  "fs.path.source": None, "fs.path.sourceraw": None, "fs.path.target": None,
                                  "fs.path.targetraw": None}

    def test_a_relative_path_keeps_its_trailing_slash(self) -> None:
        """mkdir("a/./b/../c/") names /home/alice/a/c/, as std::filesystem's lexically_normal keeps the slash."""
        event = Stream().record("mkdir", 200, path="a/./b/../c/", mode=0o755)
        assert extract(event, "fs.path.name") == "/home/alice/a/c/"
        assert extract(event, "fs.path.nameraw") == "a/./b/../c/"

    def test_an_absolute_path_is_left_as_passed(self) -> None:
        """libsinsp only resolves relative paths: an absolute one keeps its doubled slashes and dot-dots."""
        event = Stream().record("unlinkat", 200, dirfd=-100, name="/tmp//x/../y", flags=0)
        assert extract(event, "fs.path.name") == "/tmp//x/../y" == extract(event, "fs.path.nameraw")

    def test_a_dirfd_is_not_used(self) -> None:
        """Unlike fd.name, fs.path.name joins a relative *at path to the cwd, whatever dirfd it came with."""
        s = Stream()
        s.open(200, "/etc", res=5, flags=0o200000)
        event = s.record("fchmodat", 200, dirfd=5, filename="passwd", mode=0o600)
        assert extract(event, "fs.path.name") == "/home/alice/passwd"

    def test_a_call_on_a_descriptor_names_its_file(self) -> None:
        """fchmod and fchown take the name of the descriptor they act on."""
        s = Stream()
        s.open(200, "/srv/app.conf", res=6)
        event = s.record("fchown", 200, fd=6, uid=0, gid=0)
        assert extract(event, "fs.path.name") == "/srv/app.conf" == extract(event, "fs.path.nameraw")

    @pytest.mark.parametrize(("type_", "res", "expected"), [
        ("mkdir", -17, None),               # EEXIST: a failed call has no path
        ("openat", -2, "/home/alice/gone"),  # libsinsp's open test is only "fd != -1"
        ("openat", -1, None),
        ("creat", 7, None),                 # libsinsp has no path table entry for creat
    ])
    def test_only_successful_calls_have_a_path(self, type_: str, res: int, expected: str | None) -> None:
        """A call's result decides, as libsinsp's per-event success checks do."""
        args: dict[str, Any] = {"path": "gone", "mode": 0} if type_ == "mkdir" else {
            "name": "gone", "dirfd": -100, "flags": 0, "mode": 0}
        event = Stream().record(type_, 200, res=res, **args)
        assert extract(event, "fs.path.name") == expected

    def test_other_events_have_none(self) -> None:
        """An exec is no filesystem path event."""
        s = Stream()
        s.fork(200, 210)
        assert _values(s.exec(210, "/usr/bin/id")) == dict.fromkeys(FIELDS)


class TestTwoPathCalls:
    def test_rename_source_and_target(self) -> None:
        """renameat's old path is the source, the new one the target; neither is fs.path.name."""
        event = Stream().record("renameat2", 200, olddirfd=-100, oldpath="draft.txt", newdirfd=-100,
                                newpath="/srv/final.txt", flags=0)
        assert _values(event) == {"fs.path.name": None, "fs.path.nameraw": None,
                                  "fs.path.source": "/home/alice/draft.txt", "fs.path.sourceraw": "draft.txt",
                                  "fs.path.target": "/srv/final.txt", "fs.path.targetraw": "/srv/final.txt"}

    def test_link_source_is_the_new_name(self) -> None:
        """For link, libsinsp's source is the link made (newpath) and the target the existing file."""
        event = Stream().record("link", 200, oldpath="/etc/shadow", newpath="copy")
        assert extract(event, "fs.path.source") == "/home/alice/copy"
        assert extract(event, "fs.path.target") == "/etc/shadow"

    def test_symlink_and_mount(self) -> None:
        """symlink: source the link path, target what it points to; mount: the device and the directory."""
        s = Stream()
        link = s.record("symlinkat", 200, target="/etc/shadow", linkdirfd=-100, linkpath="s")
        assert (extract(link, "fs.path.source"), extract(link, "fs.path.targetraw")) == ("/home/alice/s",
                                                                                        "/etc/shadow")
        mount = s.record("mount", 200, dev="/dev/sda1", dir="/mnt/host", type="ext4", flags=0)
        assert (extract(mount, "fs.path.source"), extract(mount, "fs.path.target")) == ("/dev/sda1", "/mnt/host")


@pytest.mark.parametrize(("path", "normal"), [
    ("/a//b/./c", "/a/b/c"), ("/a/b/..", "/a/"), ("/a/.", "/a/"), ("/..", "/"), ("/a/..", "/"),
    ("/x/a/../b/", "/x/b/"), ("/", "/"),
])
def test_lexically_normal(path: str, normal: str) -> None:
    """The normalization std::filesystem gives libsinsp's relative paths."""
    assert lexically_normal(path) == normal

"""The files the rules name, found by device and inode: what a scan finds, what it skips, where it stops."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sources.kernel.watched_files import WatchedScanner, file_key, scan


def _key(path: Path) -> int:
    info = os.lstat(path)
    return file_key(info.st_dev, info.st_ino)


def _tree(root: Path) -> dict[str, Path]:
    files = {"shadow": root / "etc" / "shadow", "sudo": root / "etc" / "sudoers.d" / "admins",
             "deep": root / "etc" / "sudoers.d" / "more" / "ops", "host_key": root / "etc" / "ssh" / "ssh_host_rsa_key",
             "config": root / "etc" / "ssh" / "sshd_config", "other": root / "home" / "notes"}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    return files


def test_exact_paths_and_everything_under_a_prefix_are_found(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    etc = str(tmp_path / "etc")
    found = scan([str(files["shadow"]), str(tmp_path / "missing")],
                 [etc + "/sudoers.d/", etc + "/ssh/ssh_host_"], limit=100)
    names = set(found.names.values())
    # The directory of a prefix ending in `/` too: a file made in it has it for parent.
    assert names == {str(files["shadow"]), etc + "/sudoers.d", etc + "/sudoers.d/admins", etc + "/sudoers.d/more",
                     str(files["deep"]), str(files["host_key"])}
    assert found.names[_key(files["deep"])] == str(files["deep"])
    assert (os.lstat(files["shadow"]).st_dev, os.lstat(files["shadow"]).st_ino) in found.ids()
    assert found.incomplete == ()


def test_links_are_not_followed_and_a_second_name_does_not_rename_a_file(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    link, hard = tmp_path / "etc" / "sudoers.d" / "link", tmp_path / "etc" / "sudoers.d" / "zz-hard"
    link.symlink_to(files["other"])
    os.link(files["shadow"], hard)
    found = scan([str(files["shadow"])], [str(tmp_path / "etc" / "sudoers.d") + "/"], limit=100)
    assert _key(files["other"]) not in found.names, "a symlink under a prefix does not watch what it points to"
    assert found.names[_key(hard)] == str(files["shadow"]), "the exact name comes first"


def test_a_walk_stops_at_the_limit_and_says_which_prefix(tmp_path: Path) -> None:
    _tree(tmp_path)
    found = scan([], [str(tmp_path / "etc") + "/"], limit=3)
    assert len(found.names) == 3 and found.incomplete == (str(tmp_path / "etc") + "/",)


def test_the_scanner_rescans_in_the_background_and_hands_over_new_files(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    prefix = str(tmp_path / "etc" / "ssh") + "/"
    scanner = WatchedScanner(limit=100, rescan_s=0.0)
    try:
        first = scanner.scan_now(frozenset(), frozenset({prefix}))
        assert set(first.names.values()) == {prefix[:-1], str(files["host_key"]), str(files["config"])}
        added = tmp_path / "etc" / "ssh" / "ssh_host_ed25519_key"
        added.write_text("x")
        rescanned = None
        deadline = time.monotonic() + 5
        while rescanned is None and time.monotonic() < deadline:
            rescanned = scanner.poll()
            time.sleep(0.01)
        assert rescanned is not None and rescanned.names[_key(added)] == str(added)
    finally:
        scanner.close()

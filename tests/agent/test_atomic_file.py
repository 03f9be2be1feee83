"""State files (the checkpoints of the audit log reader and the CloudTrail inputs): written whole, read back
tolerantly, since an unreadable checkpoint means starting over rather than failing."""

from __future__ import annotations

from pathlib import Path

from agent.atomic_file import read_state, write_state


def test_a_state_file_round_trips_with_its_version(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_state(path, {"files": [{"offset": 42}]}, version=3)
    assert read_state(path, version=3) == {"version": 3, "files": [{"offset": 42}]}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind


def test_missing_corrupt_foreign_or_other_version_state_reads_as_empty(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_bytes(b'{"version": 1, "files": [')
    foreign = tmp_path / "foreign.json"
    foreign.write_bytes(b"[1, 2]")
    older = tmp_path / "older.json"
    write_state(older, {"files": []}, version=1)
    assert [read_state(p, version=2) for p in (missing, corrupt, foreign, older)] == [{}, {}, {}, {}]

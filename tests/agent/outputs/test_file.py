"""The file output: appended lines, reopening after log rotation, and write failures that never reach the engine."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs

from agent.errors import ConfigError
from agent.outputs.file import FileOutput
from tests.agent.outputs.conftest import make_alert


class TestLines:
    def test_text_lines_are_appended_to_existing_content(self, tmp_path: Path) -> None:
        """Alerts are added after what the file already holds, one Falco text line each."""
        path = tmp_path / "alerts.log"
        path.write_text("earlier\n")
        output = FileOutput(path, as_json=False, iso8601=True)
        output.emit(make_alert(1))
        output.emit(make_alert(2))
        output.close()
        assert path.read_text().splitlines() == ["earlier", make_alert(1).text_line(iso8601=True),
                                                 make_alert(2).text_line(iso8601=True)]
        assert output.counters() == {"delivered": 2, "dropped": 0, "reopens": 0}

    def test_json_lines_are_falco_alert_objects(self, tmp_path: Path) -> None:
        """With as_json each line is Falco's JSON alert object."""
        path = tmp_path / "alerts.json"
        output = FileOutput(path, as_json=True, iso8601=False)
        output.emit(make_alert(1))
        output.close()
        assert [orjson.loads(line) for line in path.read_bytes().splitlines()] == [make_alert(1).falco_json()]

    def test_a_path_that_cannot_be_opened_fails_at_start(self, tmp_path: Path) -> None:
        """A missing directory is reported when the output is built, naming the file."""
        with pytest.raises(ConfigError, match=r"missing/alerts\.log"):
            FileOutput(tmp_path / "missing" / "alerts.log", as_json=False, iso8601=False)


class TestRotation:
    def test_reopen_after_rename_writes_to_a_new_file(self, tmp_path: Path) -> None:
        """As with logrotate: after a rename the old file gets alerts until reopen, then a new file does."""
        path = tmp_path / "alerts.log"
        output = FileOutput(path, as_json=False, iso8601=False)
        output.emit(make_alert(1))
        path.rename(tmp_path / "alerts.log.1")
        output.emit(make_alert(2))  # no signal yet: still the renamed file
        output.reopen()
        output.emit(make_alert(3))
        output.close()
        assert (tmp_path / "alerts.log.1").read_text().splitlines() == [make_alert(i).text_line() for i in (1, 2)]
        assert path.read_text().splitlines() == [make_alert(3).text_line()]
        assert output.reopens == 1

    def test_flush_carries_out_a_pending_reopen(self, tmp_path: Path) -> None:
        """A reopen asked for while no alert comes is done at the next flush, creating the new file."""
        path = tmp_path / "alerts.log"
        output = FileOutput(path, as_json=False, iso8601=False)
        path.rename(tmp_path / "alerts.log.1")
        output.reopen()
        assert not path.exists()
        output.flush()
        assert path.exists()
        output.close()


class TestFailures:
    def test_failed_writes_are_counted_logged_once_and_recover(self, tmp_path: Path) -> None:
        """On a full disk alerts are dropped and counted without raising; the next good write logs the count."""
        path = tmp_path / "alerts.log"
        path.symlink_to("/dev/full")  # every write fails with ENOSPC
        output = FileOutput(path, as_json=False, iso8601=False)
        with capture_logs() as logs:
            for i in range(3):
                output.emit(make_alert(i))
            assert output.dropped == 3 and output.delivered == 0
            path.unlink()  # space again: the next alert opens the path afresh
            output.emit(make_alert(3))
        output.close()
        assert path.read_text().splitlines() == [make_alert(3).text_line()]
        events = [e for e in logs if e["event"].startswith("output_")]
        assert [e["event"] for e in events] == ["output_write_failed", "output_write_recovered"]
        assert events[1]["dropped"] == 3
        assert output.counters() == {"delivered": 1, "dropped": 3, "reopens": 0}

    def test_unlinked_directory_is_dropped_not_raised(self, tmp_path: Path) -> None:
        """When the file cannot be reopened the alert is counted as dropped."""
        folder = tmp_path / "logs"
        folder.mkdir()
        output = FileOutput(folder / "alerts.log", as_json=False, iso8601=False)
        os.unlink(folder / "alerts.log")
        folder.rmdir()
        output.reopen()
        output.emit(make_alert(1))
        output.close()
        assert output.dropped == 1

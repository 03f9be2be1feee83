"""Loading plugin libraries: metadata, capabilities, API version, init with its schema, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.fields import ArgKind, FieldType
from agent.plugins.native import abi
from agent.plugins.native.library import PluginLibrary, PluginLoadError, check_api_version
from tests.support.plugins import Built


def test_dummy_c_declares_itself(built: Built) -> None:
    info = PluginLibrary(built.dummy_c).info
    assert (info.name, info.id, info.version, info.event_source) == ("dummy_c", 4, "0.3.0", "dummy_c")
    assert info.contact == "github.com/falcosecurity/plugins"
    assert info.required_api_version == abi.API_VERSION_TEXT
    assert info.capabilities == abi.Capability.SOURCING | abi.Capability.EXTRACTION
    assert info.init_schema is None  # dummy_c publishes no schema
    assert info.extract_event_sources == ("dummy_c",)
    fields = {f.name: f for f in info.fields}
    assert [f.name for f in info.fields] == ["dummy.divisible", "dummy.value", "dummy.strvalue"]
    assert fields["dummy.divisible"].arg == ArgKind.INDEX | ArgKind.REQUIRED
    assert fields["dummy.value"].type is FieldType.UINT64 and fields["dummy.value"].arg == ArgKind.NONE
    assert fields["dummy.strvalue"].type is FieldType.CHARBUF
    assert info.extracts_from("dummy_c") and not info.extracts_from("k8s_audit")


def test_extractor_only_plugin(built: Built) -> None:
    info = PluginLibrary(built.extractor).info
    assert info.capabilities == abi.Capability.EXTRACTION
    assert (info.id, info.event_source, info.extract_event_sources) == (0, "", ("testsrc",))


@pytest.mark.parametrize("required", ["3.12.0", "3.0.0", "3.11.9"])
def test_api_versions_accepted(required: str) -> None:
    check_api_version("lib.so", required)


@pytest.mark.parametrize(("required", "why"), [
    ("3.13.0", "a newer version"), ("3.12.1", "a newer version"), ("4.0.0", "a different major version"),
    ("2.0.0", "a different major version"),
])
def test_api_versions_refused(required: str, why: str) -> None:
    with pytest.raises(PluginLoadError, match=f"lib.so requires plugin API {required}, {why} than the 3.12.0"):
        check_api_version("lib.so", required)


def test_too_new_library_is_refused_naming_both_versions(built: Built) -> None:
    with pytest.raises(PluginLoadError) as err:
        PluginLibrary(built.too_new)
    assert str(built.too_new) in str(err.value)
    assert "3.13.0" in str(err.value) and "3.12.0" in str(err.value)


def test_not_a_plugin(built: Built) -> None:
    with pytest.raises(PluginLoadError, match=r"libnot_a_plugin.so is not a Falco plugin: it exports no "
                                              "plugin_get_required_api_version"):
        PluginLibrary(built.not_a_plugin)


def test_missing_library(tmp_path: Path) -> None:
    with pytest.raises(PluginLoadError, match=r"cannot load plugin library .*nope.so: .*check the path"):
        PluginLibrary(tmp_path / "nope.so")


def test_init_refusal_carries_the_plugin_error(built: Built) -> None:
    with pytest.raises(PluginLoadError, match=r"testsrc .* failed to initialise: refused: the test config asks to "
                                              "refuse; check its init_config"):
        PluginLibrary(built.source).init({"refuse": True})


def test_init_config_is_checked_against_the_schema(built: Built) -> None:
    library = PluginLibrary(built.source)
    assert library.info.init_schema is not None
    with pytest.raises(PluginLoadError, match="does not match the plugin's init schema at count: 'many' is not of "
                                              "type 'integer'; fix init_config"):
        library.init({"count": "many"})
    with pytest.raises(PluginLoadError, match="init_config is not JSON"):
        library.init("count=3")


def test_init_with_text_or_mapping_and_plugin_logs(built: Built) -> None:
    library = PluginLibrary(built.source)
    with capture_logs() as logs:
        for config in ('{"count": 2}', {"count": 2}, ""):
            plugin = library.init(config)
            plugin.destroy()
            plugin.destroy()  # a second destroy is harmless
    assert {"event": "plugin_log", "plugin": "testsrc", "component": "testsrc", "message": "initialised",
            "log_level": "info"} in logs

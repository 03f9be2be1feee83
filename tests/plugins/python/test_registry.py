"""Loading Python plugins from `plugins`/`load_plugins` into the registry, with Falco's semantics and the config
loader's errors (dotted key, file line)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.builtin_sources import new_engine
from agent.config import load_config
from agent.errors import ConfigError
from agent.fields import FieldType
from agent.plugins.api import NoConfig, Plugin, schema_fields
from agent.plugins.registry import PluginRegistry, load_registry

BUILTIN = ["syscall", "k8s_audit", "aws_cloudtrail"]
TICKER = "  - name: ticker\n    library_path: {path}\n"
EXTRAS = "  - name: ticker_extras\n    library_path: ticker_extras\n"
#: A second plugin claiming the ticker's event source.
AGAIN = Plugin(name="again", version="1.0.0", config=NoConfig, source="ticker")


def registry(tmp_path: Path, text: str) -> PluginRegistry:
    config = tmp_path / "agent.yaml"
    config.write_text(text)
    return load_registry(load_config(config))


@pytest.mark.parametrize("path", ["ticker", "demo_ticker:PLUGIN"])
def test_a_plugin_loads_by_entry_point_and_by_dotted_path(installed: Path, tmp_path: Path, path: str) -> None:
    loaded = registry(tmp_path, "plugins:\n" + TICKER.format(path=path))
    assert loaded.source_names() == [*BUILTIN, "ticker"]
    spec = next(spec for spec in loaded.specs() if spec.name == "ticker")
    assert {"ticker.count", "ticker.message", "ticker.even", "evt.time"} <= {f.name for f in spec.fields}
    assert spec.plugins == (("ticker", "0.2.0"),)
    assert loaded.config_key("ticker") == "plugins[0].init_config"


class TestLoadPlugins:
    """Falco: absent, every entry loads in order; a list, even empty, loads only the named entries, in its order."""

    TWO = "plugins:\n" + TICKER.format(path="ticker") + EXTRAS

    def test_absent_loads_every_entry(self, installed: Path, tmp_path: Path) -> None:
        assert [p.plugin.name for p in registry(tmp_path, self.TWO).plugins][3:] == ["ticker", "ticker_extras"]

    def test_empty_loads_none(self, installed: Path, tmp_path: Path) -> None:
        assert registry(tmp_path, self.TWO + "load_plugins: []\n").source_names() == BUILTIN

    def test_a_list_loads_the_named_ones_in_its_order(self, installed: Path, tmp_path: Path) -> None:
        loaded = registry(tmp_path, self.TWO + "load_plugins: [ticker_extras, ticker]\n")
        assert [p.plugin.name for p in loaded.plugins][3:] == ["ticker_extras", "ticker"]

    def test_an_unknown_name_is_refused_with_the_known_ones(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as caught:
            registry(tmp_path, self.TWO + "load_plugins:\n  - ticker\n  - tickr\n")
        assert str(caught.value) == (f"load_plugins[1]: no entry of plugins is named 'tickr' ({tmp_path}/agent.yaml:8);"
                                     " plugins configured: ticker, ticker_extras")

    def test_an_unlisted_entry_is_not_even_imported(self, tmp_path: Path) -> None:
        text = "plugins:\n" + TICKER.format(path="no_such_module:PLUGIN") + "load_plugins: []\n"
        assert registry(tmp_path, text).source_names() == BUILTIN


@pytest.mark.parametrize(("init_config", "message"), [
    ("\n      interval_s: 0\n", "plugins[0].init_config.interval_s: must be > 0, got 0 (AGENT:5)"),
    ("\n      intervl_s: 1\n", "plugins[0].init_config.intervl_s: unknown key (AGENT:5); known keys here: fail_after, "
                               "interval_s, message"),
    (" '{\"message\": [1]}'\n", "plugins[0].init_config.message: expected a string, got a list (AGENT:4)"),
    (" 3\n", "plugins[0].init_config: expected a mapping, got 3 (AGENT:4)"),
])
def test_init_config_errors_name_the_key_and_line(installed: Path, tmp_path: Path, init_config: str,
                                                  message: str) -> None:
    text = "plugins:\n" + TICKER.format(path="ticker") + "    init_config:" + init_config
    with pytest.raises(ConfigError) as caught:
        registry(tmp_path, text)
    assert str(caught.value) == message.replace("AGENT", f"{tmp_path}/agent.yaml")


def test_init_config_as_falco_json_text_is_checked_too(installed: Path, tmp_path: Path) -> None:
    text = "plugins:\n" + TICKER.format(path="ticker") + "    init_config: '{\"interval_s\": 2, \"message\": hi}'\n"
    loaded = registry(tmp_path, text).plugins[-1]
    assert (loaded.config.interval_s, loaded.config.message) == (2.0, "hi")


@pytest.mark.parametrize(("entry", "message"), [
    (TICKER.format(path="/usr/share/falco/plugins/libdummy.so"), "plugins[0].library_path: cannot load plugin library "
                                                                      "/usr/share/falco/plugins/libdummy.so"),
    (TICKER.format(path="tickr"), "no plugin 'tickr' in the entry-point group falco_agent.plugins (installed: "),
    (TICKER.format(path="demo_ticker:SOURCE"), "is a str, not an agent.plugins.api.Plugin"),
    (TICKER.format(path="demo_tickr:PLUGIN"), "ModuleNotFoundError"),
    ("  - name: tick\n    library_path: ticker\n", "write name: ticker"),
    ("  - name: ticker\n", "plugins[0]: give name and library_path"),
    (TICKER.format(path="ticker") * 2, "plugins[1].name: 'ticker' is already the name of plugins[0]"),
])
def test_entries_that_cannot_load_say_why(installed: Path, tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        registry(tmp_path, "plugins:\n" + entry)


def test_two_plugins_cannot_provide_one_source(installed: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"provides event source .ticker., which plugins\[0\]\.init_config provides"):
        registry(tmp_path, "plugins:\n" + TICKER.format(path="ticker")
                 + "  - name: again\n    library_path: tests.plugins.python.test_registry:AGAIN\n")


def test_an_extracting_plugin_adds_its_fields_to_a_builtin_source(installed: Path, tmp_path: Path) -> None:
    loaded = registry(tmp_path, "plugins:\n" + EXTRAS)
    spec = next(spec for spec in loaded.specs() if spec.name == "aws_cloudtrail")
    assert "extras.name_length" in spec.fields and "ct.name" in spec.fields
    assert ("ticker_extras", "1.0.0") in spec.plugins
    assert loaded.source_names() == BUILTIN


def _extractor(name: str, field: str) -> Plugin[NoConfig]:
    return Plugin(name=name, version="1.0.0", config=NoConfig, extract_sources=("aws_cloudtrail",),
                  fields=schema_fields([{"name": field, "type": "string", "desc": "d"}], lambda *_: None))


#: An extractor declaring a field CloudTrail already has, and two declaring the same new one.
CLASH, TWIN_A, TWIN_B = _extractor("clash", "ct.name"), _extractor("twin_a", "twin.x"), _extractor("twin_b", "twin.x")


def test_a_field_declared_twice_for_one_source_is_refused(installed: Path, tmp_path: Path) -> None:
    """As Falco: neither declaration silently wins."""
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.init_config: plugin 'clash' declares field 'ct.name' for "
                                          r"event source 'aws_cloudtrail', which sources.aws_cloudtrail declares"):
        registry(tmp_path, "plugins:\n  - name: clash\n    library_path: tests.plugins.python.test_registry:CLASH\n")
    twins = "".join(f"  - name: {name}\n    library_path: tests.plugins.python.test_registry:{name.upper()}\n"
                    for name in ("twin_a", "twin_b"))
    with pytest.raises(ConfigError, match=r"plugins\[1\]\.init_config: plugin 'twin_b' declares field 'twin.x' .* "
                                          r"which plugins\[0\]\.init_config declares already"):
        registry(tmp_path, "plugins:\n" + twins)


class TestRequiredPluginVersions:
    """As Falco: a requirement no loaded plugin satisfies fails the load, naming the plugin and the versions."""

    RULES = "- required_plugin_versions:\n    - name: ticker\n      version: {version}\n"

    def load(self, tmp_path: Path, plugins: str, version: str) -> list[str]:
        rules = tmp_path / "rules.yaml"
        rules.write_text(self.RULES.format(version=version))
        engine = new_engine(sources=registry(tmp_path, plugins).specs())
        return [problem.as_text() for problem in engine.load_rules_files([rules]).errors]

    def test_met_by_the_loaded_plugin(self, installed: Path, tmp_path: Path) -> None:
        assert self.load(tmp_path, "plugins:\n" + TICKER.format(path="ticker"), "0.1.0") == []

    def test_a_plugin_not_loaded_fails(self, tmp_path: Path) -> None:
        [error] = self.load(tmp_path, "", "0.1.0")
        assert "LOAD_ERR_VALIDATE" in error and "must load one of: ticker (>= 0.1.0)" in error

    def test_an_incompatible_version_fails(self, installed: Path, tmp_path: Path) -> None:
        [error] = self.load(tmp_path, "plugins:\n" + TICKER.format(path="ticker"), "1.0.0")
        assert "plugin 'ticker' version 0.2.0 is not compatible with required version 1.0.0" in error


def test_falco_field_schema_maps_to_field_specs() -> None:
    [spec] = schema_fields([{"name": "x.tag", "type": "string", "isList": True, "desc": "tags",
                             "arg": {"isRequired": True, "isKey": True}, "display": "Tag"}],
                           lambda event, field, arg: (field, arg))
    assert (spec.type, spec.is_list, spec.arg.label, spec.description) == (FieldType.STRING, True, "key, required",
                                                                           "tags")
    with pytest.raises(ValueError, match="unknown type 'text'"):
        schema_fields([{"name": "x.y", "type": "text"}], lambda event, field, arg: None)

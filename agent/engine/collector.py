"""Defines, appends to, overrides and toggles lists, macros and rules by name, in file order."""

from __future__ import annotations

import re

from agent.engine.correlation_collector import CorrelationDef, collect_correlation
from agent.engine.infos import ListDef, MacroDef, RuleDef
from agent.engine.load_result import ErrorCode, LoadResult, WarningCode
from agent.engine.reader import Item
from agent.engine.requirements import EngineRequirement, PluginRequirement
from agent.engine.rule_collector import collect_rule

_LIST_NAME_RE = re.compile(r"[^()\"' \t\r\n=,]+")
_MACRO_NAME_RE = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*")


class Collector:
    """Holds what has been read so far; one counter orders every definition, append and override."""

    def __init__(self, *, known_sources: frozenset[str], result: LoadResult) -> None:
        self.known_sources = known_sources
        self.result = result
        self.lists: dict[str, ListDef] = {}
        self.macros: dict[str, MacroDef] = {}
        self.rules: dict[str, RuleDef] = {}
        self.correlations: dict[str, CorrelationDef] = {}
        self.engine_requirements: list[EngineRequirement] = []
        self.plugin_requirements: list[PluginRequirement] = []
        self._counter = 0

    def _next(self) -> int:
        self._counter += 1
        return self._counter

    def collect(self, item: Item) -> None:
        """Apply one item; raises LoadAborted (recorded) on an error."""
        if item.kind == "required_engine_version":
            self.engine_requirements.append(EngineRequirement.from_item(item, self.result))
        elif item.kind == "required_plugin_versions":
            self.plugin_requirements.extend(PluginRequirement.from_item(item, self.result))
        elif item.kind == "list":
            self._collect_list(item)
        elif item.kind == "macro":
            self._collect_macro(item)
        elif item.kind == "correlation":
            collect_correlation(self, item)
        else:
            self._collect_rule(item)

    # ----- shared update checks ---------------------------------------------------------------
    def update_ops(self, item: Item, allowed: dict[str, frozenset[str]]) -> dict[str, str] | None:
        """The `override` map checked against what this kind allows, or None for a plain item."""
        result = self.result
        legacy = item.values.get("append")
        if "override" in item.present and legacy is not None:
            raise result.error(
                ErrorCode.LOAD_ERR_YAML_VALIDATE, "'override' and 'append: true' cannot be used together",
                item.at("override"),
            )
        if "override" not in item.present:
            return None
        overrides = item.values["override"]
        if not isinstance(overrides, dict) or not overrides:
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, "'override' must be a non-empty mapping",
                               item.at("override"))
        for key, op in overrides.items():
            if op not in ("append", "replace"):
                raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE,
                                   f"invalid override operation '{op}' for '{key}': use append or replace",
                                   item.at("override"))
            if key not in allowed[op]:
                raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE,
                                   f"key '{key}' cannot be overridden with '{op}'", item.at("override"))
            if key not in item.present:
                raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE,
                                   f"key '{key}' is named under 'override' but missing from the item",
                                   item.at("override"))
        return overrides

    def missing_target(self, item: Item) -> Exception:
        return self.result.error(
            ErrorCode.LOAD_ERR_VALIDATE,
            f"{item.kind} '{item.name}' has 'append' or 'override' but no earlier definition to update",
            item.location,
        )

    # ----- lists ------------------------------------------------------------------------------
    def _collect_list(self, item: Item) -> None:
        result = self.result
        items = item.values.get("items")
        if not isinstance(items, list) or any(isinstance(x, (list, dict)) for x in items):
            raise result.error(ErrorCode.LOAD_ERR_YAML_VALIDATE, "'items' must be a sequence of scalars",
                               item.at("items"))
        texts = ["" if x is None else x for x in items]
        if not _LIST_NAME_RE.fullmatch(item.name):
            result.warn(WarningCode.LOAD_INVALID_LIST_NAME, f"list name '{item.name}' can not be used in a "
                        "condition", item.location)
        ops = self.update_ops(item, {"append": frozenset({"items"}), "replace": frozenset({"items"})})
        is_append = item.get_bool("append", result, False) or (ops is not None and ops["items"] == "append")
        existing = self.lists.get(item.name)
        if item.get_bool("append", result, False):
            result.warn(WarningCode.LOAD_DEPRECATED_ITEM, "'append: true' is deprecated, use 'override'",
                        item.at("append"))
        # As Falco: replacing a list's items is defining it again, so it needs no earlier definition.
        if is_append:
            if existing is None:
                raise self.missing_target(item)
            existing.items = existing.items + texts
            existing.visibility = self._next()
            return
        if existing is not None:
            existing.items = texts
            existing.location = item.location
            existing.visibility = self._next()
        else:
            n = self._next()
            self.lists[item.name] = ListDef(item.name, texts, n, n, item.location)

    # ----- macros -----------------------------------------------------------------------------
    def _collect_macro(self, item: Item) -> None:
        result = self.result
        condition = item.get_str("condition", result, required=True)
        assert condition is not None
        if not _MACRO_NAME_RE.fullmatch(item.name):
            result.warn(WarningCode.LOAD_INVALID_MACRO_NAME, f"macro name '{item.name}' can not be used in a "
                        "condition", item.location)
        ops = self.update_ops(item, {"append": frozenset({"condition"}), "replace": frozenset({"condition"})})
        legacy = item.get_bool("append", result, False)
        if legacy:
            result.warn(WarningCode.LOAD_DEPRECATED_ITEM, "'append: true' is deprecated, use 'override'",
                        item.at("append"))
        is_append = legacy or (ops is not None and ops["condition"] == "append")
        existing = self.macros.get(item.name)
        # As Falco: replacing a macro's condition is defining it again, so it needs no earlier definition.
        if is_append:
            if existing is None:
                raise self.missing_target(item)
            existing.condition = f"{existing.condition} {condition}"
            existing.visibility = self._next()
            return
        cond_loc = item.at("condition")
        if existing is not None:
            existing.condition = condition
            existing.location = cond_loc
            existing.visibility = self._next()
        else:
            n = self._next()
            self.macros[item.name] = MacroDef(item.name, condition, n, n, cond_loc)

    # ----- rules ------------------------------------------------------------------------------
    def _collect_rule(self, item: Item) -> None:
        collect_rule(self, item)

    def next_position(self) -> int:
        return self._next()

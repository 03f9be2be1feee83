"""A plugin's declared fields (`plugin_get_fields()` JSON) and their place in the agent's field model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from agent.fields import ArgKind, FieldType
from agent.plugins.native.abi import FieldTypeCode

#: Plugin field types as the agent's rules see them: strings are CHARBUF, as libsinsp maps FTYPE_STRING.
FIELD_TYPES = {
    "string": (FieldTypeCode.STRING, FieldType.CHARBUF),
    "uint64": (FieldTypeCode.UINT64, FieldType.UINT64),
    "bool": (FieldTypeCode.BOOL, FieldType.BOOL),
    "reltime": (FieldTypeCode.RELTIME, FieldType.RELTIME),
    "abstime": (FieldTypeCode.ABSTIME, FieldType.ABSTIME),
    "ipaddr": (FieldTypeCode.IPADDR, FieldType.IPADDR),
    "ipnet": (FieldTypeCode.IPNET, FieldType.IPNET),
}


class FieldsError(ValueError):
    """`plugin_get_fields()` returned something that is not a valid field list; the message says what."""


@dataclass(frozen=True, slots=True)
class PluginField:
    """One field a plugin extracts: its position in the declared list is its `field_id` in the ABI."""

    field_id: int
    name: str
    code: FieldTypeCode
    type: FieldType
    description: str
    is_list: bool = False
    arg: ArgKind = ArgKind.NONE
    display: str = ""
    add_output: bool = False


def parse_fields(text: str) -> tuple[PluginField, ...]:
    """Parse and check the JSON field list, as libsinsp does when it loads a plugin."""
    try:
        declared = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FieldsError(f"field list is not JSON: {exc}") from None
    if not isinstance(declared, list):
        raise FieldsError("field list is not a JSON array")
    fields: list[PluginField] = []
    seen: set[str] = set()
    for index, item in enumerate(declared):
        field = _parse_field(index, item)
        if field.name in seen:
            raise FieldsError(f"field '{field.name}' is declared twice")
        seen.add(field.name)
        fields.append(field)
    return tuple(fields)


def _parse_field(index: int, item: Any) -> PluginField:
    if not isinstance(item, dict):
        raise FieldsError(f"field #{index} is not a JSON object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise FieldsError(f"field #{index} has no name")
    type_name = item.get("type")
    if type_name not in FIELD_TYPES:
        raise FieldsError(f"field '{name}' has type {type_name!r}; expected one of {', '.join(FIELD_TYPES)}")
    code, field_type = FIELD_TYPES[type_name]
    return PluginField(
        field_id=index, name=name, code=code, type=field_type, description=str(item.get("desc", "")),
        is_list=item.get("isList") is True, arg=_arg_kind(name, item.get("arg")),
        display=str(item.get("display", "")), add_output=item.get("addOutput") is True,
    )


def _arg_kind(name: str, arg: Any) -> ArgKind:
    if arg is None:
        return ArgKind.NONE
    if not isinstance(arg, dict):
        raise FieldsError(f"field '{name}' has an 'arg' that is not a JSON object")
    kind = ArgKind.NONE
    if arg.get("isIndex") is True:
        kind |= ArgKind.INDEX
    if arg.get("isKey") is True:
        kind |= ArgKind.KEY
    if arg.get("isRequired") is True:
        if kind == ArgKind.NONE:
            raise FieldsError(f"field '{name}' requires an argument but says neither isIndex nor isKey")
        kind |= ArgKind.REQUIRED
    return kind

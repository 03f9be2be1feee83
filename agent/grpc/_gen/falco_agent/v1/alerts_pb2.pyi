import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_EMERGENCY: _ClassVar[Priority]
    PRIORITY_ALERT: _ClassVar[Priority]
    PRIORITY_CRITICAL: _ClassVar[Priority]
    PRIORITY_ERROR: _ClassVar[Priority]
    PRIORITY_WARNING: _ClassVar[Priority]
    PRIORITY_NOTICE: _ClassVar[Priority]
    PRIORITY_INFORMATIONAL: _ClassVar[Priority]
    PRIORITY_DEBUG: _ClassVar[Priority]
PRIORITY_UNSPECIFIED: Priority
PRIORITY_EMERGENCY: Priority
PRIORITY_ALERT: Priority
PRIORITY_CRITICAL: Priority
PRIORITY_ERROR: Priority
PRIORITY_WARNING: Priority
PRIORITY_NOTICE: Priority
PRIORITY_INFORMATIONAL: Priority
PRIORITY_DEBUG: Priority

class Alert(_message.Message):
    __slots__ = ("seq", "time", "rule", "priority", "source", "tags", "hostname", "output", "output_fields")
    class OutputFieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FieldValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FieldValue, _Mapping]] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELDS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    rule: str
    priority: Priority
    source: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    hostname: str
    output: str
    output_fields: _containers.MessageMap[str, FieldValue]
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rule: _Optional[str] = ..., priority: _Optional[_Union[Priority, str]] = ..., source: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., hostname: _Optional[str] = ..., output: _Optional[str] = ..., output_fields: _Optional[_Mapping[str, FieldValue]] = ...) -> None: ...

class FieldValue(_message.Message):
    __slots__ = ("string_value", "int_value", "bool_value", "list_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    LIST_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    int_value: int
    bool_value: bool
    list_value: StringList
    def __init__(self, string_value: _Optional[str] = ..., int_value: _Optional[int] = ..., bool_value: _Optional[bool] = ..., list_value: _Optional[_Union[StringList, _Mapping]] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class AlertFilter(_message.Message):
    __slots__ = ("min_priority", "sources", "rules", "tags_any", "tags_all")
    MIN_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    TAGS_ANY_FIELD_NUMBER: _ClassVar[int]
    TAGS_ALL_FIELD_NUMBER: _ClassVar[int]
    min_priority: Priority
    sources: _containers.RepeatedScalarFieldContainer[str]
    rules: _containers.RepeatedScalarFieldContainer[str]
    tags_any: _containers.RepeatedScalarFieldContainer[str]
    tags_all: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, min_priority: _Optional[_Union[Priority, str]] = ..., sources: _Optional[_Iterable[str]] = ..., rules: _Optional[_Iterable[str]] = ..., tags_any: _Optional[_Iterable[str]] = ..., tags_all: _Optional[_Iterable[str]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("allow_list", "deny_list", "resume_after", "max_batch")
    ALLOW_LIST_FIELD_NUMBER: _ClassVar[int]
    DENY_LIST_FIELD_NUMBER: _ClassVar[int]
    RESUME_AFTER_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    allow_list: _containers.RepeatedCompositeFieldContainer[AlertFilter]
    deny_list: _containers.RepeatedCompositeFieldContainer[AlertFilter]
    resume_after: int
    max_batch: int
    def __init__(self, allow_list: _Optional[_Iterable[_Union[AlertFilter, _Mapping]]] = ..., deny_list: _Optional[_Iterable[_Union[AlertFilter, _Mapping]]] = ..., resume_after: _Optional[int] = ..., max_batch: _Optional[int] = ...) -> None: ...

class Gap(_message.Message):
    __slots__ = ("missed", "first_missed_seq", "last_missed_seq")
    MISSED_FIELD_NUMBER: _ClassVar[int]
    FIRST_MISSED_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_MISSED_SEQ_FIELD_NUMBER: _ClassVar[int]
    missed: int
    first_missed_seq: int
    last_missed_seq: int
    def __init__(self, missed: _Optional[int] = ..., first_missed_seq: _Optional[int] = ..., last_missed_seq: _Optional[int] = ...) -> None: ...

class AlertBatch(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("alert", "gap", "batch")
    ALERT_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    alert: Alert
    gap: Gap
    batch: AlertBatch
    def __init__(self, alert: _Optional[_Union[Alert, _Mapping]] = ..., gap: _Optional[_Union[Gap, _Mapping]] = ..., batch: _Optional[_Union[AlertBatch, _Mapping]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("after_seq", "limit", "allow_list", "deny_list")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ALLOW_LIST_FIELD_NUMBER: _ClassVar[int]
    DENY_LIST_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    limit: int
    allow_list: _containers.RepeatedCompositeFieldContainer[AlertFilter]
    deny_list: _containers.RepeatedCompositeFieldContainer[AlertFilter]
    def __init__(self, after_seq: _Optional[int] = ..., limit: _Optional[int] = ..., allow_list: _Optional[_Iterable[_Union[AlertFilter, _Mapping]]] = ..., deny_list: _Optional[_Iterable[_Union[AlertFilter, _Mapping]]] = ...) -> None: ...

class VersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VersionResponse(_message.Message):
    __slots__ = ("version", "api_version", "first_seq", "last_seq")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    version: str
    api_version: str
    first_seq: int
    last_seq: int
    def __init__(self, version: _Optional[str] = ..., api_version: _Optional[str] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ...) -> None: ...

from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMERGENCY: _ClassVar[priority]
    ALERT: _ClassVar[priority]
    CRITICAL: _ClassVar[priority]
    ERROR: _ClassVar[priority]
    WARNING: _ClassVar[priority]
    NOTICE: _ClassVar[priority]
    INFORMATIONAL: _ClassVar[priority]
    DEBUG: _ClassVar[priority]

class source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYSCALL: _ClassVar[source]
    K8S_AUDIT: _ClassVar[source]
    INTERNAL: _ClassVar[source]
    PLUGIN: _ClassVar[source]
EMERGENCY: priority
ALERT: priority
CRITICAL: priority
ERROR: priority
WARNING: priority
NOTICE: priority
INFORMATIONAL: priority
DEBUG: priority
SYSCALL: source
K8S_AUDIT: source
INTERNAL: source
PLUGIN: source

"""The one-line CloudTrail event summary (`ct.info`) and the record readings it is built from.

Every function here takes a CloudTrail record (a parsed JSON object) and returns a field value,
with the value rules of `agent.fields`: ``None`` when not available. They follow cloudtrail
plugin 0.17.1, quirks included, so that alerts print what Falco would print.
"""

from __future__ import annotations

from typing import Any

#: Marks a key that is absent, as opposed to one holding JSON null.
MISSING: Any = object()

_UINT64_LIMIT = 1 << 64
_READ_ARROW = "\u2190"  # ←
_WRITE_ARROW = "\u2192"  # →
_PUBLIC_ACCESS_FLAGS = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
# Identity types whose ct.user is the type name itself: their records carry no usable name.
_SELF_NAMED_TYPES = frozenset({"AWSAccount", "FederatedUser"})


def as_text(value: Any) -> str | None:
    """A plain field's value: a JSON string as is, any other JSON value as "", absent as None."""
    if value is MISSING:
        return None
    return text(value)


def text(value: Any) -> str:
    """A present value as text: a JSON string as is, any other JSON value as ""."""
    return value if value.__class__ is str else ""


def _child(node: Any, key: str) -> Any:
    return node.get(key, MISSING) if node.__class__ is dict else MISSING


def user_name(record: dict[str, Any]) -> str | None:
    """`ct.user`: who acted, chosen by identity type; unknown types and missing names give None."""
    identity = record.get("userIdentity")
    if identity.__class__ is not dict:
        return None
    kind = identity.get("type")
    if kind == "Root" or kind == "IAMUser":
        return as_text(identity.get("userName", MISSING))
    if kind == "AWSService":
        return as_text(identity.get("invokedBy", MISSING))
    if kind == "AssumedRole":
        issuer = _child(identity.get("sessionContext"), "sessionIssuer")
        name = _child(issuer, "userName")
        # A role session whose issuer is not recorded still names its identity type.
        return "AssumedRole" if name is MISSING else as_text(name)
    if kind.__class__ is str and kind in _SELF_NAMED_TYPES:
        return kind
    return None


def original_user(record: dict[str, Any]) -> str | None:
    """`ct.originaluser`: the session name of an assumed role, else the identity's userName."""
    identity = record.get("userIdentity")
    if identity.__class__ is not dict:
        return None
    if identity.get("type") != "AssumedRole":
        return as_text(identity.get("userName", MISSING))
    # arn:aws:sts::<account>:assumed-role/<role>/<session>: the session is the third segment.
    arn = identity.get("arn")
    if arn.__class__ is str:
        parts = arn.split("/")
        if len(parts) == 3:
            return parts[2]
    # <role id>:<session>
    principal = identity.get("principalId")
    if principal.__class__ is str:
        parts = principal.split(":")
        if len(parts) == 2:
            return parts[1]
    return None


def _byte_count(value: Any) -> int:
    """A transferred-bytes number as uint64: fractions truncated, anything not a number is 0."""
    kind = value.__class__
    if kind is int:
        number: int = value
        return min(max(number, 0), _UINT64_LIMIT - 1)
    if kind is float:
        if value != value:  # NaN, which lenient JSON parsers accept
            return 0
        if value >= _UINT64_LIMIT:
            return _UINT64_LIMIT - 1
        return int(value) if value > 0 else 0
    return 0


def transferred_bytes(record: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    """Sum of `additionalEventData[key]` over `keys`, or None when none of the keys is present."""
    data = record.get("additionalEventData")
    if data.__class__ is not dict:
        return None
    total = 0
    is_present = False
    for key in keys:
        value = data.get(key, MISSING)
        if value is not MISSING:
            is_present = True
            total += _byte_count(value)
    # uint64 arithmetic, as upstream adds the two counters.
    return total % _UINT64_LIMIT if is_present else None


S3_BYTE_KEYS = ("bytesTransferredIn", "bytesTransferredOut")


def s3_uri(record: dict[str, Any]) -> str | None:
    """`s3.uri`: ``s3://bucket/key`` when the request names both as strings."""
    params = record.get("requestParameters")
    if params.__class__ is not dict:
        return None
    bucket = params.get("bucketName")
    key = params.get("key")
    if bucket.__class__ is not str or key.__class__ is not str:
        return None
    return f"s3://{bucket}/{key}"


def summary(record: dict[str, Any]) -> str:
    """`ct.info`: ``<user> via <srcip> [!]<arrow> <eventName>`` plus S3 size and target details.

    Always available: a record lacking the who or the what gets a bracketed explanation.
    """
    user = user_name(record)
    if user is None:
        return "<invalid cloudtrail event: userIdentity field missing>"
    srcip = as_text(record.get("sourceIPAddress", MISSING))
    if srcip is None:
        # Upstream's wording names eventSource although it checks sourceIPAddress.
        return "<invalid cloudtrail event: eventSource field missing>"
    name = as_text(record.get("eventName", MISSING))
    if name is None:
        return "<invalid cloudtrail event: eventName field missing>"
    failed = "!" if "errorCode" in record else ""
    read_only = record.get("readOnly", MISSING)
    # Only a record that says it writes gets the write arrow: a missing readOnly reads as a read.
    arrow = _WRITE_ARROW if read_only is not MISSING and read_only is not True else _READ_ARROW
    # A service acting from its own name (srcip "ec2.amazonaws.com") is not repeated after "via".
    head = f"{user} {failed}{arrow} {name}" if user == srcip else f"{user} via {srcip} {failed}{arrow} {name}"
    return head + _details(record, name)


def _bool_text(value: Any) -> str:
    return "true" if value is True else "false"


def _details(record: dict[str, Any], name: str) -> str:
    params = record.get("requestParameters")
    if name == "PutBucketPublicAccessBlock":
        if _child(params, "PublicAccessBlockConfiguration").__class__ is dict:
            # Upstream reads the four flags from the record's top level, not from the
            # configuration, so they print false unless the record itself carries them.
            flags = " ".join(f"{flag}={_bool_text(record.get(flag))}" for flag in _PUBLIC_ACCESS_FLAGS)
            return f" {flags} "
        return ""
    text = ""
    size = transferred_bytes(record, S3_BYTE_KEYS)
    if size is not None:
        text = f" Size={size}"
    uri = s3_uri(record)
    if uri is not None:
        return f"{text} URI={uri}"
    for key, label in (("bucketName", "Bucket"), ("key", "Key"), ("Host", "Host")):
        value = as_text(_child(params, key))
        if value is not None:
            return f"{text} {label}={value}"
    return text

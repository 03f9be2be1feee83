"""The `aws_cloudtrail` source as the engine sees it: its 73 fields and how each reads a record.

An event's payload is one CloudTrail record (a dict). Value rules follow cloudtrail plugin
0.17.1: a plain field at a JSON path yields the string there, `""` for any other JSON value
(null included) and None when the path is absent; only the fields described as "JSON text"
serialise objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.event import Event
from agent.fields import (
    ArgKind,
    Extractor,
    ExtractorFactory,
    FieldFlag,
    FieldSpec,
    FieldTable,
    FieldType,
    InlineRead,
    Value,
    template_literal,
    with_inline,
)
from agent.generic_fields import generic_fields
from agent.json_fields import compact_json, json_fields
from agent.source import SourceSpec
from sources.cloudtrail.info import (
    MISSING,
    S3_BYTE_KEYS,
    as_text,
    original_user,
    s3_uri,
    summary,
    text,
    transferred_bytes,
    user_name,
)

RecordReader = Callable[[dict[str, Any]], Value]

_REQUEST, _RESPONSE, _IDENTITY = "requestParameters", "responseElements", "userIdentity"


# --- extractor factories -------------------------------------------------------------------


def _value_at(node: Any, path: tuple[str, ...]) -> Any:
    """The value at `path` below `node`, or MISSING when a step is absent or not an object."""
    for key in path:
        if node.__class__ is not dict:
            return MISSING
        node = node.get(key, MISSING)
    return node


def _string_extractor(path: tuple[str, ...]) -> Extractor:
    """Read the plain value at `path`; one- and two-step paths, nearly all of them, skip the loop, and generated
    code reads them inline (`_inline_string`)."""
    if len(path) == 1:
        (key,) = path
        return with_inline(lambda event: as_text(event.payload.get(key, MISSING)), _inline_string(path))
    if len(path) == 2:
        outer, inner = path

        def extract_nested(event: Event) -> Value:
            node = event.payload.get(outer)
            return as_text(node.get(inner, MISSING)) if node.__class__ is dict else None

        return with_inline(extract_nested, _inline_string(path))

    return lambda event: as_text(_value_at(event.payload, path))


def _inline_string(path: tuple[str, ...]) -> InlineRead:
    """The inline form of `_string_extractor` of a one- or two-step path, for a record (an object)."""
    last = template_literal(path[-1])
    value = f"({{tmp}} if ({{tmp}} := {{node}}.get({last}, {{MISSING}})).__class__ is str else " \
            "None if {tmp} is {MISSING} else '')"
    if len(path) == 1:
        value = value.replace("{node}", "{payload}")
    else:
        value = f"({value.replace('{node}', '{tmp}')} if ({{tmp}} := {{payload}}.get({template_literal(path[0])}))" \
                ".__class__ is dict else None)"
    return InlineRead("{payload}.__class__ is dict", value, (("MISSING", MISSING),))


def _string_at(*path: str) -> ExtractorFactory:
    """Factory for a plain string field at a JSON path (keys from the record root)."""
    extract = _string_extractor(path)
    return lambda _arg: extract


def _first_string_at(*paths: tuple[str, ...]) -> ExtractorFactory:
    """Factory for a plain string field read at the first of `paths` that is present."""
    readers = tuple(_string_extractor(path) for path in paths)

    def extract(event: Event) -> Value:
        for read in readers:
            value = read(event)
            if value is not None:
                return value
        return None

    return lambda _arg: extract


def _record(read: RecordReader) -> ExtractorFactory:
    """Factory for a field computed from the whole record by `read`."""
    return lambda _arg: lambda event: read(event.payload)


def _never_available(_arg: str | None) -> Extractor:
    # Upstream looks this key up with the wrong case, so the field never has a value.
    return lambda _event: None


def json_text(value: Any) -> str:
    """A JSON value as compact JSON text, strings quoted (as upstream serialises sub-documents)."""
    return compact_json(value).decode()


def _json_at(key: str) -> ExtractorFactory:
    """Factory for a field holding a whole sub-document as JSON text."""

    def extract(event: Event) -> Value:
        value = event.payload.get(key, MISSING)
        return None if value is MISSING else json_text(value)

    return lambda _arg: extract


def _flag_at(key: str) -> ExtractorFactory:
    """Factory for a `true`/`false` text field: only JSON true reads as true; absent is None."""

    def extract(event: Event) -> Value:
        value = event.payload.get(key, MISSING)
        if value is MISSING:
            return None
        return "true" if value is True else "false"

    return lambda _arg: extract


def _list_field(read: Callable[[dict[str, Any]], tuple[str, ...] | None]) -> ExtractorFactory:
    """Factory for a list field: the whole tuple, or with `[N]` the Nth element (None past the end)."""

    def factory(arg: str | None) -> Extractor:
        if arg is None:
            return lambda event: read(event.payload)
        index = int(arg)

        def extract_one(event: Event) -> Value:
            values = read(event.payload)
            return values[index] if values is not None and index < len(values) else None

        return extract_one

    return factory


# --- record readers that need more than a path ---------------------------------------------


def _short_source(record: dict[str, Any]) -> str | None:
    source = as_text(record.get("eventSource", MISSING))
    if source and len(source) > len(".amazonaws.com") and source.endswith(".amazonaws.com"):
        return source[: -len(".amazonaws.com")]
    return source


def _resources(record: dict[str, Any]) -> str | None:
    resources = record.get("resources")
    if resources.__class__ is not list or not resources:
        return None
    return ",".join(json_text(resource) for resource in resources)


def _byte_reader(keys: tuple[str, ...]) -> RecordReader:
    return lambda record: transferred_bytes(record, keys)


def _count_if_named(wanted: frozenset[str], *, is_match_counted: bool) -> RecordReader:
    """1 when eventName is (or, with is_match_counted false, is not) one of `wanted`, else None."""

    def read(record: dict[str, Any]) -> int | None:
        name = record.get("eventName")
        is_match = name.__class__ is str and name in wanted
        return 1 if is_match == is_match_counted else None

    return read


def _instance_name(record: dict[str, Any]) -> str | None:
    items = _value_at(record, (_REQUEST, "tagSpecificationSet", "items"))
    if items.__class__ is not list:
        return None
    name = ""
    # Upstream keeps scanning after a match, so the last instance item's Name tag wins.
    for item in items:
        if item.__class__ is not dict or item.get("resourceType") != "instance":
            continue
        tags = item.get("tags")
        for tag in tags if tags.__class__ is list else ():
            if tag.__class__ is dict and tag.get("key") == "Name":
                value = tag.get("value")
                name = value if value.__class__ is str else ""
                break
    return name or None


# Where a request names an image when the response lists no instances, in order of preference.
_IMAGE_ID_FALLBACKS = (
    ("imageId",),
    ("DescribeFastLaunchImagesRequest", "ImageId", "content"),
    ("launchSpecification", "imageId"),
)


def _image_ids(record: dict[str, Any]) -> tuple[str, ...] | None:
    instances = _value_at(record, (_RESPONSE, "instancesSet"))
    if instances is not MISSING:
        items = instances.get("items") if instances.__class__ is dict else None
        if items.__class__ is not list:
            return None
        ids = tuple(
            text(item["imageId"]) for item in items if item.__class__ is dict and "imageId" in item
        )
        return ids or None
    params = record.get(_REQUEST)
    for path in _IMAGE_ID_FALLBACKS:
        image_id = _value_at(params, path)
        if image_id is not MISSING:
            return (text(image_id),)
    return None


def _summary_extractor(event: Event) -> Value:
    return summary(event.payload)


# --- the table -------------------------------------------------------------------------------

# (field, JSON path, description) for every field that is just the string at one path.
_PLAIN_FIELDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("ct.id", ("eventID",), "unique identifier CloudTrail gave the event"),
    ("ct.error", ("errorCode",), "error code of a failed call; not available when the call succeeded"),
    ("ct.errormessage", ("errorMessage",), "error text of a failed call; not available when it succeeded"),
    ("ct.time", ("eventTime",), "event time exactly as written in the record"),
    ("ct.src", ("eventSource",), "AWS service endpoint that recorded the call, e.g. ec2.amazonaws.com"),
    ("ct.name", ("eventName",), "API action or event name, e.g. RunInstances"),
    ("ct.user.identitytype", (_IDENTITY, "type"), "kind of caller identity: Root, IAMUser, AssumedRole..."),
    ("ct.user.principalid", (_IDENTITY, "principalId"), "stable identifier of the calling principal"),
    ("ct.user.arn", (_IDENTITY, "arn"), "ARN of the calling principal"),
    ("ct.region", ("awsRegion",), "AWS region the call was made to"),
    ("ct.response.subnetid", (_RESPONSE, "subnetId"), "subnet ID returned in the response"),
    ("ct.response.reservationid", (_RESPONSE, "reservationId"), "EC2 reservation ID in the response"),
    ("ct.request.availabilityzone", (_REQUEST, "availabilityZone"),
     "availability zone named by the request"),
    ("ct.request.cluster", (_REQUEST, "cluster"), "cluster named by the request"),
    ("ct.request.functionname", (_REQUEST, "functionName"), "Lambda function named by the request"),
    ("ct.request.groupname", (_REQUEST, "groupName"), "group name given in the request"),
    ("ct.request.host", (_REQUEST, "Host"), "host name given in the request"),
    ("ct.request.name", (_REQUEST, "name"), "name of the resource the request acts on"),
    ("ct.request.policy", (_REQUEST, "policy"), "policy document passed in the request"),
    ("ct.request.reason", (_REQUEST, "reason"), "reason given in the request"),
    ("ct.request.target", (_REQUEST, "target"), "target named by the request"),
    ("ct.request.serialnumber", (_REQUEST, "serialNumber"), "MFA device serial number in the request"),
    ("ct.request.servicename", (_REQUEST, "serviceName"), "service name given in the request"),
    ("ct.request.subnetid", (_REQUEST, "subnetId"), "subnet ID given in the request"),
    ("ct.request.taskdefinition", (_REQUEST, "taskDefinition"), "ECS task definition in the request"),
    ("ct.request.username", (_REQUEST, "userName"), "IAM user name the request acts on"),
    ("ct.srcip", ("sourceIPAddress",), "address the call came from (an IP, or a service name)"),
    ("ct.useragent", ("userAgent",), "client or tool that made the call"),
    ("ct.requestid", ("requestID",), "identifier the service gave the request"),
    ("ct.eventtype", ("eventType",), "record kind: AwsApiCall, AwsServiceEvent, AwsConsoleSignIn..."),
    ("ct.apiversion", ("apiVersion",), "API version of an AwsApiCall"),
    ("ct.recipientaccountid", ("recipientAccountId",), "account that received the event"),
    ("ct.serviceeventdetails", ("serviceEventDetails",),
     "details of a service event (an object reads as the empty string)"),
    ("ct.sharedeventid", ("sharedEventID",), "ID shared by the copies of one event sent to several accounts"),
    ("ct.vpcendpointid", ("vpcEndpointId",), "VPC endpoint the request went through"),
    ("ct.eventcategory", ("eventCategory",), "event category: Management, Data, Insight..."),
    ("ct.addendum.reason", ("addendum", "reason"), "why the record was delivered late or amended"),
    ("ct.addendum.updatedfields", ("addendum", "updatedFields"), "record fields an addendum changed"),
    ("ct.addendum.originalrequestid", ("addendum", "originalRequestID"), "request ID of the amended record"),
    ("ct.addendum.originaleventid", ("addendum", "originalEventID"), "event ID of the amended record"),
    ("ct.edgedevicedetails", ("edgeDeviceDetails",),
     "edge devices the request targets (an object reads as the empty string)"),
    ("ct.tlsdetails.tlsversion", ("tlsDetails", "tlsVersion"), "TLS version the client used"),
    ("ct.tlsdetails.ciphersuite", ("tlsDetails", "cipherSuite"), "TLS cipher suite the client used"),
    ("ct.tlsdetails.clientprovidedhostheader", ("tlsDetails", "clientProvidedHostHeader"),
     "host name the client sent in the request"),
    ("s3.bucket", (_REQUEST, "bucketName"), "S3 bucket the request names"),
    ("s3.key", (_REQUEST, "key"), "S3 object key the request names"),
    ("ecr.repository", (_REQUEST, "repositoryName"), "ECR repository the request names"),
    ("ecr.imagetag", (_REQUEST, "imageTag"), "container image tag the request names"),
    ("iam.role", (_REQUEST, "roleName"), "IAM role the request names"),
    ("iam.policy", (_REQUEST, "policyName"), "IAM policy the request names"),
)

_S3_GET_PUT = frozenset({"GetObject", "PutObject"})


def cloudtrail_field_specs() -> list[FieldSpec]:
    """The 73 `ct.*`, `s3.*`, `ec2.*`, `ecr.*` and `iam.*` fields."""
    string, uint64 = FieldType.STRING, FieldType.UINT64
    specs = [FieldSpec(name, string, desc, _string_at(*path)) for name, path, desc in _PLAIN_FIELDS]
    specs += [
        FieldSpec("ct.shortsrc", string, "service endpoint without its .amazonaws.com suffix, e.g. ec2",
                  _record(_short_source)),
        FieldSpec("ct.user", string, "who acted: user name, calling service or role, by identity type",
                  _record(user_name)),
        FieldSpec("ct.originaluser", string, "session name for assumed roles, else the identity's user name",
                  _record(original_user)),
        FieldSpec("ct.user.accountid", string, "caller's account, else the account that received the event",
                  _first_string_at(("userIdentity", "accountId"), ("recipientAccountId",))),
        FieldSpec("ct.request.documentname", string, "SSM document name of the request (never available)",
                  _never_available),
        FieldSpec("ct.request", string, "all request parameters as JSON text", _json_at(_REQUEST)),
        FieldSpec("ct.response", string, "all response elements as JSON text", _json_at(_RESPONSE)),
        FieldSpec("ct.additionaleventdata", string, "the additional event data as JSON text",
                  _json_at("additionalEventData")),
        FieldSpec("ct.resources", string, "resources the event touched, each as JSON text, comma-separated",
                  _record(_resources)),
        FieldSpec("ct.info", string, "one-line summary: who, from where, read or write, what, and target",
                  lambda _arg: _summary_extractor),
        FieldSpec("ct.managementevent", string, "true for a management (control plane) event",
                  _flag_at("managementEvent")),
        FieldSpec("ct.readonly", string, "true when the call only reads state, false when it changes it",
                  _flag_at("readOnly")),
        FieldSpec("ct.sessioncredentialfromconsole", string, "true when the session came from the console",
                  _flag_at("sessionCredentialFromConsole")),
        FieldSpec("s3.uri", string, "S3 object as s3://bucket/key", _record(s3_uri)),
        FieldSpec("s3.bytes", uint64, "bytes an S3 call uploaded plus downloaded",
                  _record(_byte_reader(S3_BYTE_KEYS))),
        FieldSpec("s3.bytes.in", uint64, "bytes an S3 call uploaded",
                  _record(_byte_reader(S3_BYTE_KEYS[:1]))),
        FieldSpec("s3.bytes.out", uint64, "bytes an S3 call downloaded",
                  _record(_byte_reader(S3_BYTE_KEYS[1:]))),
        FieldSpec("s3.cnt.get", uint64, "1 for a GetObject call, else not available",
                  _record(_count_if_named(frozenset({"GetObject"}), is_match_counted=True))),
        FieldSpec("s3.cnt.put", uint64, "1 for a PutObject call, else not available",
                  _record(_count_if_named(frozenset({"PutObject"}), is_match_counted=True))),
        FieldSpec("s3.cnt.other", uint64, "1 for any call but GetObject and PutObject, else not available",
                  _record(_count_if_named(_S3_GET_PUT, is_match_counted=False))),
        FieldSpec("ec2.name", string, "Name tag the request gives a new EC2 instance",
                  _record(_instance_name)),
        FieldSpec("ec2.imageid", string, "first image ID of ec2.imageids (use ec2.imageids[0])",
                  lambda _arg: _list_field(_image_ids)("0"), flags=FieldFlag.DEPRECATED),
        FieldSpec("ec2.imageids", string, "image IDs of the EC2 instances the call involves",
                  _list_field(_image_ids), is_list=True, arg=ArgKind.INDEX),
    ]
    return specs


def cloudtrail_source() -> SourceSpec:
    """The `aws_cloudtrail` source: generic, json and CloudTrail fields, indexed by `ct.name`."""
    fields = FieldTable(
        [
            *generic_fields(plugin_name="cloudtrail", plugin_info=_summary_extractor),
            *json_fields(),
            *cloudtrail_field_specs(),
        ]
    )
    return SourceSpec(
        name="aws_cloudtrail",
        fields=fields,
        index_fields=("ct.name",),
        plugins=(("cloudtrail", "0.17.1"), ("json", "0.7.4")),
        guard_fields=("ct.src", "ct.user.identitytype"),
    )

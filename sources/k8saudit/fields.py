"""The `k8s_audit` source as the engine sees it: its `ka.*` field table, index keys and plugins.

Field names, types and argument kinds follow the k8saudit plugin 0.18.0, and so do the values,
quirks included (see shared/reference/fields/README.md), so that Falco's rules keep working.
The pod fields live in `pod_fields.py`; the path-walking builders in `extraction.py`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from agent.event import Event
from agent.fields import ArgKind, ExtractorFactory, FieldFlag, FieldSpec, FieldTable, FieldType, Value
from agent.generic_fields import generic_fields
from agent.json_fields import compact_json, json_fields
from agent.source import SourceSpec
from sources.k8saudit.extraction import (
    MISSING,
    collected,
    computed,
    constant,
    flattened_texts,
    list_at,
    present_texts,
    scalar_at,
    text,
    value_at,
)
from sources.k8saudit.pod_fields import pod_fields

SOURCE_NAME = "k8s_audit"
PLUGIN_VERSIONS = (("k8saudit", "0.18.0"), ("json", "0.7.4"))

_STRING = FieldType.STRING


def _annotation(key: str) -> ExtractorFactory:
    return scalar_at("annotations", key)


def _uri_param(payload: dict[str, Any], arg: str | None) -> Value:
    """First value of query parameter `arg` in the request URI (blank values count)."""
    uri = payload.get("requestURI")
    if uri.__class__ is not str or arg is None:
        return None
    _path, has_query, query = uri.partition("?")
    if not has_query:
        return None
    return first_query_value(query.partition("#")[0], arg)


def first_query_value(query: str, name: str) -> str | None:
    """`parse_qs(query, keep_blank_values=True)[name][0]`, or None: stops at the first pair of that name."""
    for pair in query.split("&"):
        if not pair:
            continue
        key, _equals, value = pair.partition("=")
        if unquote(key.replace("+", " ")) == name:
            return unquote(value.replace("+", " "))
    return None


def _target_pod_name(payload: dict[str, Any], _arg: str | None) -> Value:
    """The created pod's name, only when the request targets a pod itself, not a subresource."""
    ref = payload.get("objectRef")
    if ref.__class__ is not dict or ref.get("resource") != "pods" or ref.get("subresource"):
        return None
    name = value_at(payload, ("responseObject", "metadata", "name"))
    return None if name is MISSING else text(name)


def _subject_names(kind: str, *, with_namespace: bool = False) -> ExtractorFactory:
    """Names of the binding's subjects of one `kind`, optionally as `namespace:name`."""

    def compute(payload: dict[str, Any], _arg: str | None) -> Value:
        subjects = value_at(payload, ("requestObject", "subjects"))
        if subjects.__class__ is not list:
            return None
        names = []
        for subject in subjects:
            if subject.__class__ is not dict or subject.get("kind") != kind:
                continue
            name = subject.get("name", MISSING)
            if name is MISSING:
                continue
            if with_namespace:
                # A subject without a namespace still names an account; keep it as ":name".
                names.append(f"{text(subject.get('namespace', ''))}:{text(name)}")
            else:
                names.append(text(name))
        return tuple(names) if names else None

    return computed(compute)


def _plugin_info(event: Event) -> Value:
    """The whole audit event as compact JSON, like the plugin's event rendering."""
    return compact_json(event.payload).decode()


def _rules_field(key: str) -> ExtractorFactory:
    return collected(("requestObject", "rules", key), flattened_texts)


def ka_fields() -> list[FieldSpec]:
    """All 100 `ka.*` field specs."""
    key_required = ArgKind.KEY | ArgKind.REQUIRED
    index = ArgKind.INDEX
    plain: list[tuple[str, str, ExtractorFactory]] = [
        ("ka.auditid", "unique id of the audit event", scalar_at("auditID")),
        ("ka.stage", "request stage that produced the event (e.g. ResponseComplete)", scalar_at("stage")),
        ("ka.auth.decision", "authorization decision (allow, forbid)",
         _annotation("authorization.k8s.io/decision")),
        ("ka.auth.reason", "why the authorizer decided so", _annotation("authorization.k8s.io/reason")),
        ("ka.auth.openshift.decision", "OpenShift authentication decision",
         _annotation("authentication.openshift.io/decision")),
        ("ka.validations.admission.policy.failure", "failure reported by a validating admission policy",
         _annotation("validation.policy.admission.k8s.io/validation_failure")),
        ("ka.security.pod.violations", "pod security admission violations in audit mode",
         _annotation("pod-security.kubernetes.io/audit-violations")),
        ("ka.auth.openshift.username", "user name OpenShift authenticated",
         _annotation("authentication.openshift.io/username")),
        ("ka.user.name", "name of the user making the request", scalar_at("user", "username")),
        ("ka.impuser.name", "name of the user being impersonated", scalar_at("impersonatedUser", "username")),
        ("ka.verb", "API verb of the request (create, get, delete...)", scalar_at("verb")),
        ("ka.uri", "request URI with its query string", scalar_at("requestURI")),
        ("ka.target.name", "name of the object acted on", scalar_at("objectRef", "name")),
        ("ka.target.namespace", "namespace of the object acted on", scalar_at("objectRef", "namespace")),
        ("ka.target.resource", "resource type acted on (pods, secrets...)",
         scalar_at("objectRef", "resource")),
        ("ka.target.subresource", "subresource acted on (exec, attach...)",
         scalar_at("objectRef", "subresource")),
        ("ka.target.pod.name", "name of the pod the request created or changed",
         computed(_target_pod_name)),
        ("ka.req.binding.role", "role a role binding in the request grants",
         scalar_at("requestObject", "roleRef", "name")),
        ("ka.req.configmap.name", "name of the configmap acted on", scalar_at("objectRef", "name")),
        ("ka.req.configmap.obj", "data of the configmap in the request, as JSON",
         scalar_at("requestObject", "data")),
        ("ka.req.service.type", "type of the service in the request",
         scalar_at("requestObject", "spec", "type")),
        ("ka.resp.name", "name of the object in the response",
         scalar_at("responseObject", "metadata", "name")),
        ("ka.response.code", "HTTP status code of the response", scalar_at("responseStatus", "code")),
        ("ka.response.reason", "reason given with the response status, mostly on failures",
         scalar_at("responseStatus", "reason")),
        ("ka.useragent", "user agent of the client", scalar_at("userAgent")),
        ("ka.cluster.name", "cluster name annotation of the event", _annotation("cluster_name")),
    ]
    lists: list[tuple[str, str, ExtractorFactory]] = [
        ("ka.user.groups", "groups of the user making the request", list_at("user", "groups")),
        ("ka.req.binding.subjects", "subjects of the role binding in the request, each as JSON",
         list_at("requestObject", "subjects")),
        ("ka.req.binding.subjects.user_names", "names of the binding's User subjects",
         _subject_names("User")),
        ("ka.req.binding.subjects.serviceaccount_names", "names of the binding's ServiceAccount subjects",
         _subject_names("ServiceAccount")),
        ("ka.req.binding.subjects.serviceaccount_ns_names",
         "the binding's ServiceAccount subjects as namespace:name",
         _subject_names("ServiceAccount", with_namespace=True)),
        ("ka.req.binding.subjects.group_names", "names of the binding's Group subjects",
         _subject_names("Group")),
        ("ka.req.role.rules", "rules of the role in the request, each as JSON",
         list_at("requestObject", "rules")),
    ]
    indexed: list[tuple[str, str, ExtractorFactory]] = [
        ("ka.req.role.rules.apiGroups", "API groups named by the role's rules", _rules_field("apiGroups")),
        ("ka.req.role.rules.nonResourceURLs", "non-resource URLs named by the role's rules",
         _rules_field("nonResourceURLs")),
        ("ka.req.role.rules.verbs", "verbs allowed by the role's rules", _rules_field("verbs")),
        ("ka.req.role.rules.resources", "resources named by the role's rules", _rules_field("resources")),
        ("ka.req.service.ports", "ports of the service in the request, the whole array as one JSON text",
         collected(("requestObject", "spec", "ports"), present_texts)),
        ("ka.sourceips", "sourceIPs found under the request's role rules (plugin quirk: rarely set)",
         _rules_field("sourceIPs")),
    ]
    return [
        *(FieldSpec(name, _STRING, desc, factory) for name, desc, factory in plain),
        *(FieldSpec(name, _STRING, desc, factory, is_list=True) for name, desc, factory in lists),
        *(FieldSpec(name, _STRING, desc, factory, is_list=True, arg=index)
          for name, desc, factory in indexed),
        FieldSpec("ka.uri.param", _STRING, "first value of the given query parameter of the request URI",
                  computed(_uri_param), arg=key_required),
        FieldSpec("ka.req.binding.subject.has_name", _STRING, "always true; kept so old rules still load",
                  constant("true"), arg=key_required, flags=FieldFlag.DEPRECATED),
        *pod_fields(),
    ]


def k8s_audit_source() -> SourceSpec:
    """The k8s_audit source: generic, json.* and ka.* fields, indexed by verb and resource."""
    table = FieldTable([
        *generic_fields(plugin_name="k8saudit", plugin_info=_plugin_info),
        *json_fields(),
        *ka_fields(),
    ])
    return SourceSpec(
        name=SOURCE_NAME,
        fields=table,
        index_fields=("ka.verb", "ka.target.resource", "ka.target.subresource"),
        plugins=PLUGIN_VERSIONS,
        # The rules no index narrows check the user first. Other fields cost more to check before the rules the
        # index leaves than those rules' conditions do (bench/engine.py, guards on and off).
        guard_fields=("ka.user.name",),
    )

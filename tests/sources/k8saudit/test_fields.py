"""Tests for sources/k8saudit/fields.py and pod_fields.py: the `ka.*` values rules see."""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.event import Event
from agent.fields import ArgKind, FieldFlag, FieldTable, FieldType, Value
from sources.k8saudit.fields import k8s_audit_source
from sources.k8saudit.pod_fields import repository

REFERENCE = Path(__file__).resolve().parents[3] / ".." / "shared" / "reference"
K8S_TSV = REFERENCE / "fields" / "k8s_audit.tsv"
TRACES = REFERENCE / "samples" / "k8s_audit" / "falco-regression"

#: An argument for each field that requires one, so that every field can be bound.
REQUIRED_ARGS = {"ka.uri.param": "command", "ka.req.binding.subject.has_name": "bob",
                 "ka.req.volume.hostpath": "/etc*"}


@functools.cache
def table() -> FieldTable:
    return k8s_audit_source().fields


def extract(name: str, payload: Any, arg: str | None = None) -> Value:
    spec = table().get(name)
    assert spec is not None, name
    return spec.bind(arg)(Event(source="k8s_audit", ts_ns=0, payload=payload))


def audit(**body: Any) -> dict[str, Any]:
    """A minimal audit event with `body` merged in."""
    return {"kind": "Event", "auditID": "id-1", "stage": "ResponseComplete",
            "stageTimestamp": "2024-05-01T10:00:00.000000Z", **body}


def pod(spec: dict[str, Any]) -> dict[str, Any]:
    return audit(verb="create", objectRef={"resource": "pods", "namespace": "default"},
                 requestObject={"kind": "Pod", "spec": spec})


def trace_events(name: str) -> list[dict[str, Any]]:
    path = TRACES / name
    if not path.is_file():
        pytest.skip(f"reference trace missing: {path}")
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def ka_names() -> list[str]:
    return [spec.name for spec in table() if spec.name.startswith("ka.")]


class TestRegistration:
    def test_every_reference_field_is_registered_with_its_type_and_argument(self) -> None:
        """All 100 k8s_audit.tsv fields exist with the table's type, list-ness, argument and deprecation."""
        if not K8S_TSV.is_file():
            pytest.skip(f"reference table missing: {K8S_TSV}")
        rows = list(csv.DictReader(K8S_TSV.read_text().splitlines(), delimiter="\t"))
        arg_kinds = {"None": ArgKind.NONE, "Index": ArgKind.INDEX,
                     "Key, Required": ArgKind.KEY | ArgKind.REQUIRED}
        assert len(rows) == 100
        for row in rows:
            spec = table().get(row["name"])
            assert spec is not None, row["name"]
            assert spec.type is FieldType.parse(row["type"].removesuffix(" (list)")), row["name"]
            assert spec.is_list == row["type"].endswith("(list)"), row["name"]
            assert spec.arg == arg_kinds[row["arg"]], row["name"]
            is_deprecated = row["description"].startswith("Deprecated")
            assert (FieldFlag.DEPRECATED in spec.flags) == is_deprecated, row["name"]
            assert spec.description != row["description"], row["name"]
        assert sorted(ka_names()) == sorted(row["name"] for row in rows)

    def test_every_field_has_an_extractor_and_a_one_line_description(self) -> None:
        """No ka.* field falls back to "never available", and each is described on one line."""
        for name in ka_names():
            spec = table().get(name)
            assert spec is not None and spec.is_implemented, name
            assert spec.description and "\n" not in spec.description, name

    def test_source_spec_names_the_source_index_keys_and_plugins(self) -> None:
        """The source is k8s_audit, indexed by verb then resource, standing in for k8saudit and json."""
        spec = k8s_audit_source()
        assert spec.name == "k8s_audit"
        assert spec.index_fields == ("ka.verb", "ka.target.resource", "ka.target.subresource")
        assert spec.plugins == (("k8saudit", "0.18.0"), ("json", "0.7.4"))
        for name in ("evt.time", "evt.hostname", "json.value", "jevt.rawtime"):
            assert name in spec.fields

    def test_plugin_fields_describe_the_event(self) -> None:
        """evt.pluginname is k8saudit and evt.plugininfo renders the audit event as compact JSON."""
        event = audit(verb="get")
        assert extract("evt.pluginname", event) == "k8saudit"
        assert orjson.loads(extract("evt.plugininfo", event)) == event


class TestAuditIdGuard:
    def test_every_ka_field_is_unavailable_without_audit_id(self) -> None:
        """An object lacking auditID yields None for all 100 ka.* fields, even has_name."""
        event = pod({"containers": [{"name": "a", "image": "nginx"}], "hostNetwork": True})
        del event["auditID"]
        for name in ka_names():
            assert extract(name, event, REQUIRED_ARGS.get(name)) is None, name

    def test_json_fields_still_work_without_audit_id(self) -> None:
        """Only ka.* fields need auditID; json.value still reads the document."""
        assert extract("json.value", {"verb": "get"}, "/verb") == "get"

    def test_non_object_payload_is_unavailable(self) -> None:
        """A payload that is not a JSON object never breaks extraction."""
        assert extract("ka.verb", ["auditID"]) is None
        assert extract("ka.req.pod.containers.image", "auditID") is None


class TestScalarFields:
    def test_strings_come_out_unquoted(self) -> None:
        """String values are the text itself, for top-level keys, nested keys and annotations."""
        event = audit(
            verb="delete", requestURI="/api/v1/x", userAgent="kubectl/v1.30",
            user={"username": "alice"}, impersonatedUser={"username": "bob"},
            objectRef={"name": "n", "namespace": "ns", "resource": "secrets", "subresource": "status"},
            annotations={"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": "no",
                         "authentication.openshift.io/decision": "allow",
                         "authentication.openshift.io/username": "oc-user",
                         "validation.policy.admission.k8s.io/validation_failure": "bad",
                         "pod-security.kubernetes.io/audit-violations": "privileged",
                         "cluster_name": "prod"},
            responseStatus={"code": 403, "reason": "Forbidden"},
        )
        expected = {
            "ka.auditid": "id-1", "ka.stage": "ResponseComplete", "ka.verb": "delete", "ka.uri": "/api/v1/x",
            "ka.useragent": "kubectl/v1.30", "ka.user.name": "alice", "ka.impuser.name": "bob",
            "ka.target.name": "n", "ka.target.namespace": "ns", "ka.target.resource": "secrets",
            "ka.target.subresource": "status", "ka.req.configmap.name": "n", "ka.auth.decision": "forbid",
            "ka.auth.reason": "no", "ka.auth.openshift.decision": "allow",
            "ka.auth.openshift.username": "oc-user", "ka.validations.admission.policy.failure": "bad",
            "ka.security.pod.violations": "privileged", "ka.cluster.name": "prod",
            "ka.response.code": "403", "ka.response.reason": "Forbidden",
        }
        assert {name: extract(name, event) for name in expected} == expected

    @pytest.mark.parametrize(
        ("value", "text"),
        [(True, "true"), (False, "false"), (0, "0"), (1.5, "1.5"), (None, "null"),
         ({"a": [1, "x"]}, '{"a":[1,"x"]}'), ([1, 2], "[1,2]")],
    )
    def test_other_json_values_come_out_as_compact_json(self, value: Any, text: str) -> None:
        """Numbers, booleans, null, objects and arrays compare as their compact JSON text."""
        assert extract("ka.req.pod.host_network", pod({"hostNetwork": value})) == text

    def test_values_nested_deeper_than_orjson_writes_come_out_as_compact_json(self) -> None:
        """orjson reads 1024 levels but writes 254: a value nested 1,000 deep, which the webhook accepts, is
        written all the same by ka.*, json.value and evt.plugininfo. Rendered in an alert output, it used to raise
        on the engine's thread and end the agent."""
        deep: Any = "10.0.0.1"
        for _ in range(1000):
            deep = [deep]
        text = "[" * 1000 + '"10.0.0.1"' + "]" * 1000
        event = audit(user={"username": deep}, sourceIPs=[deep])
        assert extract("ka.user.name", event) == text
        assert extract("json.value", event, "/sourceIPs/0") == text
        assert extract("evt.plugininfo", event) == (
            '{"kind":"Event","auditID":"id-1","stage":"ResponseComplete","stageTimestamp":"2024-05-01T10:00:00.000000Z",'
            f'"user":{{"username":{text}}},"sourceIPs":[{text}]}}')

    def test_missing_or_unwalkable_paths_are_unavailable(self) -> None:
        """A missing key, or a path through a non-object, gives None rather than an error."""
        assert extract("ka.user.name", audit()) is None
        assert extract("ka.user.name", audit(user="alice")) is None
        assert extract("ka.req.pod.host_pid", audit(requestObject={"spec": [1]})) is None

    def test_configmap_obj_is_the_request_data_as_json(self) -> None:
        """ka.req.configmap.obj holds the configmap data, so rules can search it for secrets."""
        event = audit(requestObject={"data": {"password": "x", "n": 1}})
        assert extract("ka.req.configmap.obj", event) == '{"password":"x","n":1}'

    def test_target_pod_name_only_for_pods_without_subresource(self) -> None:
        """ka.target.pod.name is the response's name for pod requests, not for exec or other kinds."""
        response = {"metadata": {"name": "web-1"}}
        assert extract("ka.target.pod.name", audit(objectRef={"resource": "pods"},
                                                   responseObject=response)) == "web-1"
        assert extract("ka.target.pod.name", audit(objectRef={"resource": "pods", "subresource": "exec"},
                                                   responseObject=response)) is None
        assert extract("ka.target.pod.name", audit(objectRef={"resource": "services"},
                                                   responseObject=response)) is None
        assert extract("ka.resp.name", audit(responseObject=response)) == "web-1"

    @pytest.mark.parametrize(
        ("uri", "key", "expected"),
        [("/api/v1/pods/p/exec?command=sh&command=-c&container=c", "command", "sh"),
         ("/x?container=c&stdin=true", "stdin", "true"),
         ("/x?flag=&other=1", "flag", ""),
         ("/x?cmd=a%20b+c", "cmd", "a b c"),
         ("/x?a=1", "b", None),
         ("/x", "a", None),
         ("/x?my%20key=1&my+key=2", "my key", "1"),
         ("/x?a+b=1&a%2Bb=2", "a+b", "2"),
         ("/x?&&bare&bare=1", "bare", ""),
         ("/x?a=1=2#a=3", "a", "1=2"),
         ("/x?a=%E2%82", "a", "\ufffd")],
    )
    def test_uri_param_is_the_first_value_of_a_query_parameter(
        self, uri: str, key: str, expected: str | None
    ) -> None:
        """ka.uri.param[k] decodes the query string and returns the first value of k."""
        assert extract("ka.uri.param", audit(requestURI=uri), key) == expected

    def test_has_name_is_always_true(self) -> None:
        """The deprecated ka.req.binding.subject.has_name is `true` for any argument, as in Falco."""
        assert extract("ka.req.binding.subject.has_name", audit(), "anyone") == "true"


class TestListFields:
    def test_list_values_are_tuples_and_empty_lists_unavailable(self) -> None:
        """A list field gives a tuple of texts; an empty or non-array value is not available."""
        assert extract("ka.user.groups", audit(user={"groups": ["a", "b"]})) == ("a", "b")
        assert extract("ka.user.groups", audit(user={"groups": []})) is None
        assert extract("ka.user.groups", audit(user={"groups": "a"})) is None
        assert extract("ka.req.pod.supplemental_groups",
                       pod({"securityContext": {"supplementalGroups": [10, 20]}})) == ("10", "20")

    def test_binding_subjects_by_kind(self) -> None:
        """Binding subjects come as JSON each, and split into user, group and service account names."""
        subjects = [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                    {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"},
                    {"kind": "ServiceAccount", "name": "other"}]
        event = audit(requestObject={"roleRef": {"name": "cluster-admin"}, "subjects": subjects})
        assert extract("ka.req.binding.role", event) == "cluster-admin"
        assert extract("ka.req.binding.subjects", event)[0] == '{"kind":"User","name":"alice"}'
        assert extract("ka.req.binding.subjects.user_names", event) == ("alice",)
        assert extract("ka.req.binding.subjects.group_names", event) == ("devs",)
        assert extract("ka.req.binding.subjects.serviceaccount_names", event) == ("sa", "other")
        assert extract("ka.req.binding.subjects.serviceaccount_ns_names", event) == ("ns:sa", ":other")
        assert extract("ka.req.binding.subjects.user_names", audit(requestObject={"subjects": []})) is None

    def test_role_rule_fields_merge_every_rule(self) -> None:
        """Role rule verbs/resources/apiGroups/URLs are the union over rules; [N] reads rule N."""
        rules = [{"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["get", "list"]},
                 {"nonResourceURLs": ["/healthz"], "verbs": ["*"]}]
        event = audit(requestObject={"rules": rules})
        assert extract("ka.req.role.rules.verbs", event) == ("get", "list", "*")
        assert extract("ka.req.role.rules.resources", event) == ("pods", "secrets")
        assert extract("ka.req.role.rules.apiGroups", event) == ("",)
        assert extract("ka.req.role.rules.nonResourceURLs", event) == ("/healthz",)
        assert extract("ka.req.role.rules.verbs", event, "1") == "*"
        # The engine treats an indexed field as a scalar, so a rule with several verbs gives its first.
        assert extract("ka.req.role.rules.verbs", event, "0") == "get"
        assert extract("ka.req.role.rules.verbs", event, "2") is None
        assert extract("ka.req.role.rules.nonResourceURLs", event, "0") is None
        assert len(extract("ka.req.role.rules", event)) == 2

    def test_sourceips_reads_role_rules_not_the_top_level_key(self) -> None:
        """Quirk kept from the plugin: ka.sourceips reads requestObject.rules[*].sourceIPs."""
        assert extract("ka.sourceips", audit(sourceIPs=["10.0.0.1"])) is None
        event = audit(sourceIPs=["10.0.0.1"], requestObject={"rules": [{"sourceIPs": ["1.2.3.4"]}]})
        assert extract("ka.sourceips", event) == ("1.2.3.4",)
        assert extract("ka.sourceips", event, "0") == "1.2.3.4"

    def test_service_ports_is_the_whole_array_as_one_value(self) -> None:
        """Quirk kept from the plugin: ka.req.service.ports is one JSON text, even with an index."""
        event = audit(requestObject={"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}})
        assert extract("ka.req.service.type", event) == "NodePort"
        assert extract("ka.req.service.ports", event) == ('[{"port":80},{"port":443}]',)
        assert extract("ka.req.service.ports", event, "1") == '[{"port":80},{"port":443}]'


@pytest.mark.parametrize("family", ["containers", "initContainers", "ephemeralContainers"])
class TestContainerFields:
    def test_names_and_images_per_container_and_by_index(self, family: str) -> None:
        """Each container contributes its name and image; [N] returns container N's alone."""
        event = pod({family: [{"name": "a", "image": "nginx:1.25"}, {"name": "b", "image": "redis"}]})
        assert extract(f"ka.req.pod.{family}.name", event) == ("a", "b")
        assert extract(f"ka.req.pod.{family}.image", event) == ("nginx:1.25", "redis")
        assert extract(f"ka.req.pod.{family}.image", event, "1") == "redis"
        assert extract(f"ka.req.pod.{family}.image", event, "2") is None
        assert extract(f"ka.req.pod.{family}.image.repository", event) == ("nginx", "redis")

    def test_image_is_unavailable_when_a_container_lacks_one(self, family: str) -> None:
        """As in the plugin, one container without an image makes the image fields unavailable."""
        event = pod({family: [{"name": "a", "image": "nginx"}, {"name": "b"}]})
        assert extract(f"ka.req.pod.{family}.image", event) is None
        assert extract(f"ka.req.pod.{family}.image.repository", event) is None
        assert extract(f"ka.req.pod.{family}.image", event, "0") == "nginx"

    def test_odd_container_entries_do_not_break_extraction(self, family: str) -> None:
        """Non-object entries and nested arrays are walked like the plugin does, without errors."""
        event = pod({family: ["junk", {"name": "a", "image": "x"}, [{"name": "b", "image": "y"}]]})
        assert extract(f"ka.req.pod.{family}.name", event) == ("a", "b")
        assert extract(f"ka.req.pod.{family}.image", event) is None
        assert extract(f"ka.req.pod.{family}.image", event, "1") == "x"
        assert extract(f"ka.req.pod.{family}.name", pod({family: {"name": "solo"}})) == ("solo",)

    def test_no_containers_is_unavailable(self, family: str) -> None:
        """An empty container list or a pod without one yields None, not an empty tuple."""
        assert extract(f"ka.req.pod.{family}.name", pod({family: []})) is None
        assert extract(f"ka.req.pod.{family}.name", pod({})) is None

    def test_command_and_args_are_joined_per_container(self, family: str) -> None:
        """A container's command and args arrays each become one space-joined string."""
        event = pod({family: [{"command": ["sh", "-c"], "args": ["echo hi", 3]}, {"name": "quiet"}]})
        assert extract(f"ka.req.pod.{family}.command", event) == ("sh -c",)
        assert extract(f"ka.req.pod.{family}.args", event) == ("echo hi 3",)

    def test_security_context_flags_skip_containers_without_them(self, family: str) -> None:
        """privileged and friends list only the containers that set them, as JSON text."""
        event = pod({family: [
            {"securityContext": {"privileged": True, "allowPrivilegeEscalation": False,
                                 "readOnlyRootFilesystem": True, "runAsUser": 1000, "runAsGroup": 2000,
                                 "procMount": "Unmasked",
                                 "capabilities": {"add": ["NET_ADMIN", "SYS_TIME"]}}},
            {"securityContext": {}},
        ]})
        prefix = f"ka.req.pod.{family}"
        assert extract(f"{prefix}.privileged", event) == ("true",)
        assert extract(f"{prefix}.allow_privilege_escalation", event) == ("false",)
        assert extract(f"{prefix}.read_only_fs", event) == ("true",)
        assert extract(f"{prefix}.run_as_user", event) == ("1000",)
        assert extract(f"{prefix}.run_as_group", event) == ("2000",)
        assert extract(f"{prefix}.proc_mount", event) == ("Unmasked",)
        assert extract(f"{prefix}.add_capabilities", event) == ('["NET_ADMIN","SYS_TIME"]',)
        assert extract(f"{prefix}.privileged", event, "0") == "true"
        assert extract(f"{prefix}.privileged", event, "1") is None

    def test_effective_ids_ignore_security_context(self, family: str) -> None:
        """Quirk kept from the plugin: eff_run_as_* read keys outside securityContext, else 0."""
        prefix = f"ka.req.pod.{family}"
        real = pod({"securityContext": {"runAsUser": 1000},
                    family: [{"securityContext": {"runAsUser": 1001, "runAsGroup": 5}}]})
        assert extract(f"{prefix}.eff_run_as_user", real) == ("0",)
        assert extract(f"{prefix}.eff_run_as_group", real) == ("0",)
        direct = pod({"runAsUser": 7, family: [{"runAsUser": 42}, {}]})
        assert extract(f"{prefix}.eff_run_as_user", direct) == ("42", "7")
        assert extract(f"{prefix}.eff_run_as_user", direct, "0") == "42"
        # The plugin's indexed walk stops at the chosen container, so its default never applies.
        assert extract(f"{prefix}.eff_run_as_user", direct, "1") is None


class TestPodFields:
    def test_image_repository_cut_keeps_the_plugins_quirk(self) -> None:
        """The repository is the image up to its first ':' then '@', so a registry port cuts it short."""
        assert repository("falcosecurity/falco:0.38") == "falcosecurity/falco"
        assert repository("nginx@sha256:abc") == "nginx"
        assert repository("reg:5000/app:1") == "reg"
        assert extract("ka.req.pod.containers.image.repository",
                       pod({"containers": [{"image": "reg:5000/app:1"}]})) == ("reg",)

    def test_host_ports_fall_back_to_container_ports(self) -> None:
        """host_port lists hostPort when set, else containerPort, for every port of every container."""
        event = pod({"containers": [
            {"ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 443}]},
            {"name": "no-ports"},
            {"ports": [{"containerPort": 53}]},
        ]})
        assert extract("ka.req.pod.containers.host_port", event) == ("8080", "443", "53")
        assert extract("ka.req.pod.containers.host_port", event, "0") == "8080"
        assert extract("ka.req.pod.containers.host_port", event, "2") == "53"
        assert extract("ka.req.pod.containers.host_port", event, "1") is None
        assert extract("ka.req.pod.initContainers.host_port",
                       pod({"initContainers": [{"ports": [{"hostPort": 22}]}]})) == ("22",)

    def test_pod_security_settings(self) -> None:
        """Pod-wide host namespaces and security context ids come out as JSON text."""
        event = pod({"hostIPC": True, "hostPID": False,
                     "securityContext": {"runAsUser": 0, "runAsGroup": 10, "fsGroup": 20}})
        assert extract("ka.req.pod.host_ipc", event) == "true"
        assert extract("ka.req.pod.host_pid", event) == "false"
        assert extract("ka.req.pod.host_network", event) is None
        assert extract("ka.req.pod.run_as_user", event) == "0"
        assert extract("ka.req.pod.run_as_group", event) == "10"
        assert extract("ka.req.pod.fs_group", event) == "20"

    def test_volume_fields(self) -> None:
        """Volume fields list host paths, flexVolume drivers and each volume's source kinds."""
        event = pod({"volumes": [
            {"name": "etc", "hostPath": {"path": "/etc", "type": ""}},
            {"name": "cfg", "configMap": {"name": "c"}},
            {"name": "flex", "flexVolume": {"driver": "vendor/drv"}},
        ]})
        assert extract("ka.req.pod.volumes.hostpath", event) == ("/etc",)
        assert extract("ka.req.pod.volumes.flexvolume_driver", event) == ("vendor/drv",)
        assert extract("ka.req.pod.volumes.volume_type", event) == ("hostPath", "configMap", "flexVolume")
        assert extract("ka.req.pod.volumes.volume_type", event, "1") == "configMap"
        assert extract("ka.req.pod.volumes.hostpath", event, "1") is None

    @pytest.mark.parametrize(
        ("arg", "expected"),
        [("/etc", "true"), ("/et*", "true"), ("/et", "false"), ("/var/run/docker.sock", "false")],
    )
    def test_deprecated_volume_hostpath_matches_exactly_or_by_prefix(self, arg: str, expected: str) -> None:
        """ka.req.volume.hostpath[p] is true for an exact host path, or a prefix when p ends in '*'."""
        event = pod({"volumes": [{"name": "v", "hostPath": {"path": "/etc"}}, {"name": "e", "emptyDir": {}}]})
        assert extract("ka.req.volume.hostpath", event, arg) == expected

    def test_deprecated_volume_hostpath_without_volumes_is_unavailable(self) -> None:
        """Without a volumes list the old field is not available rather than false."""
        assert extract("ka.req.volume.hostpath", pod({}), "/etc") is None

    def test_deprecated_container_fields(self) -> None:
        """The old ka.req.container.* fields read the first container, or any container for privileged."""
        event = pod({"hostNetwork": True, "containers": [
            {"image": "docker.io/nginx:1", "securityContext": {"privileged": False}},
            {"image": "busybox", "securityContext": {"privileged": True}},
        ]})
        assert extract("ka.req.container.image", event) == "docker.io/nginx:1"
        assert extract("ka.req.container.image.repository", event) == "docker.io/nginx"
        assert extract("ka.req.container.host_network", event) == "true"
        assert extract("ka.req.container.privileged", event) == "true"
        assert extract("ka.req.container.privileged", pod({"containers": [{"image": "x"}]})) == "false"
        assert extract("ka.req.container.privileged", pod({})) is None
        assert extract("ka.req.container.image", pod({"containers": []})) is None


class TestRealTraces:
    @pytest.mark.parametrize(
        ("trace", "name", "arg", "expected"),
        [
            ("create_nginx_pod_privileged_2nd_container.json", "ka.req.pod.containers.privileged", None,
             ("false", "true")),
            ("create_nginx_pod_privileged_2nd_container.json", "ka.req.pod.containers.image.repository", None,
             ("nginx", "mysql")),
            ("create_nginx_pod_privileged_2nd_container.json", "ka.req.container.privileged", None, "true"),
            ("create_nginx_pod_privileged_2nd_container.json", "ka.req.pod.containers.eff_run_as_user", None,
             ("0", "0")),
            ("create_nginx_pod_privileged_2nd_container.json", "ka.target.pod.name", None,
             "nginx-deployment-544b59f8b8-ffkxm"),
            ("create_nginx_pod_hostnetwork.json", "ka.req.pod.host_network", None, "true"),
            ("create_nginx_pod_sensitive_mount.json", "ka.req.pod.volumes.hostpath", None, ("/etc",)),
            ("create_nginx_pod_sensitive_mount.json", "ka.req.volume.hostpath", "/etc", "true"),
            ("create_clusterrolebinding.json", "ka.req.binding.subjects.user_names", None, ("minikube",)),
            ("create_clusterrolebinding.json", "ka.req.binding.role", None, "system:basic-user"),
            ("create_cluster_role_wildcard_verbs.json", "ka.req.role.rules.verbs", None, ("*", "get")),
            ("create_nginx_service_nodeport.json", "ka.req.service.type", None, "NodePort"),
            ("exec_pod.json", "ka.uri.param", "command", "bash"),
            ("exec_pod.json", "ka.target.subresource", None, "exec"),
            ("exec_pod.json", "ka.response.code", None, "101"),
            ("anonymous_creates_namespace_foo.json", "ka.user.name", None, "system:anonymous"),
            ("create_configmap.json", "ka.req.configmap.name", None, "my-config"),
        ],
    )
    def test_sample_event_values(self, trace: str, name: str, arg: str | None, expected: Value) -> None:
        """Fields read the values Falco's rules rely on from the upstream regression traces."""
        assert extract(name, trace_events(trace)[0], arg) == expected

    def test_every_field_extracts_from_every_trace_event(self) -> None:
        """Every ka.* field gives None, a str or a non-empty str tuple on real events; [0] gives a str."""
        if not TRACES.is_dir():
            pytest.skip(f"reference traces missing: {TRACES}")
        count = 0
        for path in sorted(TRACES.glob("*.json")):
            if path.name.startswith("expected") or path.name == "fal_01_003.json":
                continue
            for event in trace_events(path.name):
                count += 1
                for name in ka_names():
                    value = extract(name, event, REQUIRED_ARGS.get(name))
                    assert value is None or isinstance(value, str) or (
                        isinstance(value, tuple) and value and all(isinstance(v, str) for v in value)
                    ), (path.name, name, value)
                    spec = table().get(name)
                    if spec is not None and ArgKind.INDEX in spec.arg:
                        first = extract(name, event, "0")
                        assert first is None or isinstance(first, str), (path.name, name, first)
        assert count == 51

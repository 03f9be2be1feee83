"""Loading agent.yaml: defaults, overrides, environment interpolation and errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.config import load_config
from agent.config.load import _build
from agent.config.raw import RawValue as _Value
from agent.config.schema import EXAMPLE_TRAIL_DIR, Bounds
from agent.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


class TestLoad:
    def test_defaults_without_a_file(self) -> None:
        """With no file the agent gets its built-in defaults: webhook on 127.0.0.1:9765, text alerts."""
        config = load_config()
        assert config.sources.k8s_audit.webhook.listen == "127.0.0.1:9765"
        assert (config.rule_matching, config.outputs.stdout.format) == ("first", "text")

    def test_without_a_file_the_example_cloudtrail_logs_are_read(self, tmp_path: Path) -> None:
        """The built-in configuration (no file) adds the checkout's example CloudTrail logs; a file starts from none."""
        assert load_config().sources.aws_cloudtrail.directory.paths == (str(EXAMPLE_TRAIL_DIR),)
        assert load_config(write(tmp_path, "")).sources.aws_cloudtrail.directory.paths == ()
        off = load_config(overrides=["sources.aws_cloudtrail.directory.paths=[]"])
        assert off.sources.aws_cloudtrail.directory.paths == ()

    def test_file_and_override(self, tmp_path: Path) -> None:
        """`-o key=value` overrides what the file says, with YAML typing of the value."""
        path = write(tmp_path, "rule_matching: all\nsources:\n  k8s_audit:\n    files:\n      follow: false\n")
        config = load_config(path, overrides=["sources.k8s_audit.files.paths=[/var/log/a, /var/log/b]",
                                              "rule_matching=first"])
        assert config.rule_matching == "first"
        assert config.sources.k8s_audit.files.paths == ("/var/log/a", "/var/log/b")
        assert config.sources.k8s_audit.files.follow is False

    def test_environment_interpolation(self, tmp_path: Path) -> None:
        """`${NAME}` takes a value from the environment and `${NAME:-x}` falls back to x."""
        path = write(tmp_path, "hostname: ${NODE_NAME}\nsources:\n  k8s_audit:\n    webhook:\n"
                               "      tls: {cert_file: '${CERT:-/etc/tls/server.crt}'}\n")
        config = load_config(path, environ={"NODE_NAME": "node-7"})
        assert config.hostname == "node-7"
        assert config.sources.k8s_audit.webhook.tls is not None
        assert config.sources.k8s_audit.webhook.tls.cert_file == "/etc/tls/server.crt"

    def test_noise_policies_are_a_list_of_mappings(self, tmp_path: Path) -> None:
        """`noise.rules` loads as a tuple of policies, each with its optional rate and dedup settings."""
        path = write(tmp_path, "noise:\n  rules:\n    - match: 'Terminal shell*'\n"
                               "      rate: {alerts: 5, per_s: 30, fields: [k8s.pod.name]}\n"
                               "    - match: '*'\n      dedup: {fields: [ka.user.name, ka.target.name]}\n")
        first, second = load_config(path).noise.rules
        assert first.rate is not None and (first.rate.alerts, first.rate.per_s) == (5, 30.0)
        assert first.rate.fields == ("k8s.pod.name",) and first.dedup is None
        assert second.rate is None and second.dedup is not None
        assert (second.dedup.fields, second.dedup.window_s) == (("ka.user.name", "ka.target.name"), 60.0)

    def test_nats_output_keys(self) -> None:
        """The NATS output is off by default and takes its servers as a list."""
        config = load_config(overrides=["outputs.nats.enabled=true", "outputs.nats.servers=[nats://a:4222]"])
        assert config.outputs.nats.enabled and config.outputs.nats.servers == ("nats://a:4222",)
        assert load_config().outputs.nats.subject == "falco.alerts.{source}.{priority}"

    def test_rule_commands_from_the_file_then_overrides(self, tmp_path: Path) -> None:
        """`rules` keeps the file's commands in order and `-o rules[].…` appends more, as Falco's -o does."""
        path = write(tmp_path, "rules:\n  - disable: {rule: '*'}\n  - enable: {tag: network}\n")
        config = load_config(path, overrides=["rules[].disable.rule=Write below *", "rules[].enable.tag=k8s"])
        commands = [("enable", c.enable) if c.enable else ("disable", c.disable) for c in config.rules]
        assert [(action, m.rule, m.tag) for action, m in commands if m is not None] == [
            ("disable", "*", ""), ("enable", "", "network"), ("disable", "Write below *", ""), ("enable", "", "k8s")]


class TestErrors:
    @pytest.mark.parametrize(("text", "needle"), [
        ("rule_matchin: all\n", "rule_matchin: unknown key"),
        ("sources:\n  k8s_audit:\n    webhook:\n      max_body_bytes: lots\n",
         "sources.k8s_audit.webhook.max_body_bytes: expected a whole number, got 'lots'"),
        ("rule_matching: most\n", "rule_matching: expected one of first, all"),
        ("outputs: [stdout]\n", "outputs: expected a mapping"),
        ("hostname: ${MISSING_VAR}\n", "hostname: environment variable MISSING_VAR is not set"),
        ("rules_files: [a\n", "invalid YAML"),
        ("rules_files: " + "[" * 5000 + "]" * 5000 + "\n", "agent.yaml: the YAML nests too deeply"),
        ("noise:\n  rules:\n    - match: x\n      dedup: {window: 5}\n",
         "noise.rules[0].dedup.window: unknown key"),
        ("rules:\n  - disable: {name: x}\n", "rules[0].disable.name: unknown key"),
        ("rules:\n  - {enable: {rule: a}, disable: {tag: b}}\n", "rules[0]: give exactly one of enable or disable"),
        ("rules:\n  - {}\n", "rules[0]: give exactly one of enable or disable"),
        ("rules:\n  - enable: {rule: ''}\n", "rules[0].enable: give rule (a name or glob) or tag"),
        ('rules_files: ["/etc/a\\0b"]\n', "rules_files[0]: expected text without NUL characters"),
    ])
    def test_mistakes_name_the_key_and_line(self, tmp_path: Path, text: str, needle: str) -> None:
        """Each mistake is refused with the dotted key, the reason and the file line."""
        with pytest.raises(ConfigError) as caught:
            load_config(write(tmp_path, text), environ={})
        assert needle in str(caught.value)
        if "YAML" not in needle:
            assert f"agent.yaml:{text.count(chr(10))}" in str(caught.value)

    def test_bad_override(self) -> None:
        """An override without '=' is refused with an example of the right form."""
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            load_config(overrides=["rule_matching"])

    @pytest.mark.parametrize(("text", "needle"), [
        ("queue_capacity_events: 0\n", "queue_capacity_events: must be >= 1, got 0"),
        ("sources:\n  aws_cloudtrail:\n    sqs:\n      wait_time_s: 21\n",
         "sources.aws_cloudtrail.sqs.wait_time_s: must be >= 0 and <= 20, got 21"),
        ("sources:\n  kernel:\n    ring_buffer_pages: 3000\n",
         "sources.kernel.ring_buffer_pages: must be a power of two, got 3000"),
        ("metrics:\n  stale_after_s: .nan\n", "metrics.stale_after_s: expected a finite number, got nan"),
        ("webserver:\n  listen_port: 70000\n", "webserver.listen_port: must be >= 0 and <= 65535, got 70000"),
        ("grpc:\n  address: '[::1]:65536'\n", "grpc.address: address '[::1]:65536' must look like host:port"),
    ])
    def test_values_out_of_range_name_the_key_and_line(self, tmp_path: Path, text: str, needle: str) -> None:
        """A number outside its key's bounds, or a listen address that is not host:port, is refused at load."""
        with pytest.raises(ConfigError) as caught:
            load_config(write(tmp_path, text), environ={})
        assert needle in str(caught.value) and f"agent.yaml:{text.count(chr(10))})" in str(caught.value)

    def test_an_empty_grpc_address_means_no_tcp(self) -> None:
        """grpc.address may stay empty (unix socket only); it is not held to host:port."""
        assert load_config(overrides=["grpc.address="]).grpc.address == ""


class TestBounds:
    @pytest.mark.parametrize(("bounds", "value", "problem"), [
        (Bounds(ge=1), 1, None),
        (Bounds(ge=1), 0, "must be >= 1"),
        (Bounds(gt=0), 0.0, "must be > 0"),
        (Bounds(gt=0), 0.001, None),
        (Bounds(ge=0, le=1), 1.5, "must be >= 0 and <= 1"),
        (Bounds(ge=1, is_power_of_two=True), 4096, None),
        (Bounds(ge=1, is_power_of_two=True), 96, "must be a power of two"),
    ])
    def test_problem_says_what_the_value_must_be(self, bounds: Bounds, value: float, problem: str | None) -> None:
        """A value inside the bounds has no problem; one outside is told the bounds it must keep."""
        assert bounds.problem(value) == problem


@dataclasses.dataclass(frozen=True, slots=True)
class _SelfChecking:
    """A configuration mapping that checks itself when built, as a schema class may."""

    low: int = 0
    high: int = 1

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low must not be above high")


def test_a_mapping_refused_by_its_own_check_names_its_key_and_line() -> None:
    """A ValueError from a schema class's own check is a ConfigError naming the mapping and its line."""
    mapping = _Value({"low": _Value(5, "agent.yaml:3"), "high": _Value(2, "agent.yaml:4")}, "agent.yaml:2")
    with pytest.raises(ConfigError, match=r"^limits: low must not be above high \(agent.yaml:2\)$"):
        _build(_SelfChecking, mapping, "limits.", {})


EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
#: A few settings of each shipped example, read off its YAML by hand: each must load to what it says.
EXAMPLE_SETTINGS: dict[str, dict[str, object]] = {
    "agent.yaml": {
        "rule_matching": "first", "queue_capacity_events": 20000,
        "sources.k8s_audit.webhook.listen": "127.0.0.1:9765",
        "sources.kernel.container_runtime_sockets": (
            "/var/run/docker.sock", "/run/podman/podman.sock", "/run/containerd/containerd.sock",
            "/run/crio/crio.sock", "/run/k3s/containerd/containerd.sock"),
        "rules.0.disable.rule": "NodePort Service Exposed", "rules.1.enable.tag": "network",
    },
    "deploy/kubernetes/agent.yaml": {
        "hostname": "node-7",  # ${NODE_NAME:-}, NODE_NAME set by the test
        "sources.k8s_audit.webhook.listen": "0.0.0.0:9765", "sources.aws_cloudtrail.enabled": False,
        "outputs.stdout.format": "json", "grpc.spool_dir": "/var/lib/falco-agent/spool",
        "webserver.listen_address": "0.0.0.0", "webserver.listen_port": 8765,
    },
    "cloudtrail/agent-sqs.yaml": {
        "rules_files": ("rules/aws_cloudtrail.yaml",), "sources.k8s_audit.enabled": False,
        "sources.aws_cloudtrail.aws.region": "us-east-1",
        "sources.aws_cloudtrail.sqs.queue_url": "https://sqs.us-east-1.amazonaws.com/111122223333/cloudtrail-new-logs",
        "sources.aws_cloudtrail.sqs.dead_letter_queue_url":
            "https://sqs.us-east-1.amazonaws.com/111122223333/cloudtrail-new-logs-poison",
        "sources.aws_cloudtrail.sqs.concurrency": 4, "sources.aws_cloudtrail.sqs.visibility_timeout_s": 300,
    },
    "cloudtrail/agent-s3.yaml": {
        "sources.aws_cloudtrail.s3.bucket": "org-cloudtrail-logs",
        "sources.aws_cloudtrail.s3.regions": ("us-east-1", "eu-west-1"),
        "sources.aws_cloudtrail.s3.start_date": "2026-11-01", "sources.aws_cloudtrail.s3.concurrency": 8,
        "sources.aws_cloudtrail.s3.checkpoint_path": "/var/lib/falco-agent/cloudtrail-s3.json",
    },
    "k8saudit/agent.yaml": {
        "rules_files": ("rules/k8s_audit.yaml",), "sources.k8s_audit.webhook.listen": "0.0.0.0:9765",
        "sources.k8s_audit.webhook.tls.client_ca_file": "/etc/falco-agent/tls/apiserver-ca.crt",
        "sources.k8s_audit.files.paths": ("/var/log/kubernetes/audit/",),
        "sources.k8s_audit.files.checkpoint_path": "/var/lib/falco-agent/k8s-audit.checkpoint.json",
    },
}


def setting(config: object, dotted: str) -> object:
    """The value at `a.b.0.c` of a loaded config (a number indexes a tuple)."""
    value = config
    for part in dotted.split("."):
        value = value[int(part)] if part.isdigit() else getattr(value, part)  # type: ignore[index]
    return value


@pytest.mark.parametrize("example", sorted(path.relative_to(EXAMPLES).as_posix()
                                           for path in EXAMPLES.rglob("agent*.yaml")))
def test_shipped_example_configs_load(example: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every example configuration in examples/ is valid for the agent as it is, and means what it says."""
    assert example in EXAMPLE_SETTINGS, f"new example {example}: list a few of its settings in EXAMPLE_SETTINGS"
    monkeypatch.setenv("NODE_NAME", "node-7")
    config = load_config(str(EXAMPLES / example))
    expected = EXAMPLE_SETTINGS[example]
    assert {name: setting(config, name) for name in expected} == expected


def test_every_listed_example_is_shipped() -> None:
    """The expectations above follow the examples: none names a file that is gone."""
    assert sorted(name for name in EXAMPLE_SETTINGS if not (EXAMPLES / name).is_file()) == []

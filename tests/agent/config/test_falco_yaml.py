"""Falco's falco.yaml read by the agent: every key honoured with Falco's meaning or listed as not supported,
config_files merged as Falco merges them, Falco's -o syntax, conflicts refused, Falco's plugin entries mapped."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.config import load_config
from agent.config.falco import markdown_table, warn_unsupported_keys
from agent.config.falco.plugins import s3_interval_start
from agent.config.falco.table import covering_row
from agent.config.raw import read_yaml, walk
from agent.errors import ConfigError

README = Path(__file__).resolve().parents[3] / "README.md"


def write(folder: Path, text: str, name: str = "falco.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def unsupported(path: Path, overrides: tuple[str, ...] = ()) -> dict[str, str]:
    return {key.key: key.where for key in load_config(path, overrides=overrides).unsupported_keys}


@pytest.fixture(scope="module")
def falco_yaml(reference: Path) -> Path:
    return reference / "config" / "falco.yaml"


class TestTheReferenceFile:
    def test_it_loads_unchanged_with_falcos_values(self, falco_yaml: Path) -> None:
        """Falco's own falco.yaml loads as it is; what it says is what the agent does."""
        config = load_config(falco_yaml)
        assert config.rules_files == ("/etc/falco/falco_rules.yaml", "/etc/falco/falco_rules.local.yaml",
                                      "/etc/falco/rules.d")
        outputs = config.outputs
        assert (outputs.stdout.enabled, outputs.stdout.format, outputs.syslog.enabled) == (True, "text", True)
        assert (outputs.file.enabled, outputs.file.path, outputs.file.keep_alive) == (False, "./events.txt", False)
        assert (outputs.http.user_agent, outputs.http.verify_tls, outputs.http.ca_path) == (
            "falcosecurity/falco", True, "/etc/ssl/certs")
        assert outputs.http.client_cert == ""  # mtls is false: the client files are not used, as in Falco
        assert (outputs.buffered, outputs.queue_capacity, outputs.timeout_ms) == (False, 0, 2000)
        assert outputs.program.command.startswith("jq '{text: .output}'") and outputs.program.keep_alive is False
        assert (config.webserver.listen_address, config.webserver.listen_port) == ("0.0.0.0", 8765)
        assert config.webserver.prometheus_metrics_enabled is False
        assert (config.metrics.enabled, config.metrics.output_rule, config.metrics.interval) == (False, True, "1h")
        assert (config.logging.level, config.logging.stderr, config.logging.syslog) == ("info", True, True)
        kernel = config.sources.kernel
        assert (kernel.enabled, kernel.ring_buffer_pages) == (True, 2048)  # modern_ebpf, preset 4 = 8 MiB
        assert kernel.drops.threshold == 0.1 and kernel.drops.alert_interval_s == pytest.approx(30.0, abs=0.01)
        # load_plugins: [] loads nothing: no webhook, no trail
        assert not config.sources.k8s_audit.enabled and not config.sources.aws_cloudtrail.enabled
        assert config.plugins == () and config.load_plugins == ()
        assert [entry.suggested_output for entry in config.append_output] == [True]
        assert config.loaded_files == (str(falco_yaml),)  # /etc/falco/config.d is absent here: skipped

    def test_the_keys_without_effect_are_listed_with_their_line(self, falco_yaml: Path) -> None:
        """Exactly the keys the agent does not act on are listed, each with the line Falco's file has it on."""
        lines = falco_yaml.read_text().splitlines()
        listed = unsupported(falco_yaml)
        assert sorted(listed) == [
            "base_syscalls", "engine.modern_ebpf.cpus_for_each_buffer", "engine.modern_ebpf.disable_iterators",
            "falco_libs", "http_output.max_consecutive_timeouts", "libs_logger",
            "metrics.kernel_iter_event_counters_enabled", "metrics.libbpf_stats_enabled",
            "metrics.plugins_metrics_enabled", "syscall_event_timeouts"]
        for key, where in listed.items():
            line = int(where.rpartition(":")[2])
            assert lines[line - 1].strip().startswith(key.rpartition(".")[2] + ":"), (key, where)

    def test_every_key_of_the_reference_file_is_in_the_table(self, falco_yaml: Path) -> None:
        """A key Falco documents and the table forgets fails here."""
        assert [path for path, _ in walk(read_yaml(falco_yaml)) if covering_row(path) is None] == []

    def test_the_readme_shows_the_table(self) -> None:
        """README's table is the one the translation uses, row for row."""
        assert markdown_table() in README.read_text(encoding="utf-8")

    def test_the_unsupported_keys_are_one_warning(self, falco_yaml: Path) -> None:
        """At start one warning names every key without effect, where it is written and why."""
        keys = load_config(falco_yaml).unsupported_keys
        with capture_logs() as logs:
            warn_unsupported_keys(keys)
        [entry] = logs
        assert entry["event"] == "falco_keys_not_supported" and entry["log_level"] == "warning"
        assert {k["key"] for k in entry["keys"]} >= {"libs_logger", "base_syscalls"}
        assert all(k["where"].startswith(str(falco_yaml)) and k["reason"] for k in entry["keys"])


class TestConfigFiles:
    def test_append_override_and_add_only(self, tmp_path: Path) -> None:
        """append adds to lists and replaces the rest; override replaces; add-only adds only new keys."""
        extra = tmp_path / "extra"
        extra.mkdir()
        write(extra, "rules_files: [/b.yaml]\npriority: error\n", "append.yaml")
        write(tmp_path, "rules_files: [/c.yaml]\nrule_matching: all\n", "override.yaml")
        write(tmp_path, "priority: critical\nrules_files: [/d.yaml]\ntime_format_iso_8601: true\n", "add.yaml")
        main = write(tmp_path, f"config_files:\n  - {extra}/append.yaml\n"
                               f"  - {{path: {tmp_path}/override.yaml, strategy: override}}\n"
                               f"  - {{path: {tmp_path}/add.yaml, strategy: add-only}}\n"
                               "rules_files: [/a.yaml]\npriority: warning\n")
        config = load_config(main)
        assert config.rules_files == ("/c.yaml",)  # appended to /a.yaml, then overridden
        assert (config.priority, config.rule_matching, config.time_format_iso_8601) == ("error", "all", True)
        assert config.loaded_files == (str(main), f"{extra}/append.yaml", f"{tmp_path}/override.yaml",
                                       f"{tmp_path}/add.yaml")

    def test_a_folder_is_read_in_name_order_and_a_missing_path_skipped(self, tmp_path: Path) -> None:
        """A folder stands for its .yaml and .yml files in name order; a path that does not exist is skipped."""
        folder = tmp_path / "config.d"
        folder.mkdir()
        write(folder, "rules_files: [/2.yaml]\n", "20-b.yml")
        write(folder, "rules_files: [/1.yaml]\n", "10-a.yaml")
        write(folder, "rules_files: [/never.yaml]\n", "30-c.txt")
        main = write(tmp_path, f"config_files: [{tmp_path}/absent, {folder}]\nrules_files: [/0.yaml]\n")
        config = load_config(main)
        assert config.rules_files == ("/0.yaml", "/1.yaml", "/2.yaml")
        assert config.loaded_files == (str(main), str(folder / "10-a.yaml"), str(folder / "20-b.yml"))

    def test_an_override_wins_over_an_included_file(self, tmp_path: Path) -> None:
        """-o is applied after the included files, as Falco does, and may name the files to include."""
        write(tmp_path, "rule_matching: all\npriority: error\n", "more.yaml")
        main = write(tmp_path, "priority: debug\n")
        config = load_config(main, overrides=[f"config_files[]={tmp_path}/more.yaml", "priority=notice"])
        assert (config.rule_matching, config.priority) == ("all", "notice")

    @pytest.mark.parametrize(("included", "needle"), [
        ("config_files: [/x.yaml]\n", "config_files: an included file may not include more (INC:1)"),
        ("priority: [\n", "invalid YAML"),
    ])
    def test_mistakes_in_included_files_name_the_file(self, tmp_path: Path, included: str, needle: str) -> None:
        inc = write(tmp_path, included, "inc.yaml")
        main = write(tmp_path, f"config_files: [{inc}]\n")
        with pytest.raises(ConfigError) as caught:
            load_config(main)
        assert needle.replace("INC", str(inc)) in str(caught.value) and str(inc) in str(caught.value)

    def test_a_bad_strategy_is_refused_with_its_line(self, tmp_path: Path) -> None:
        main = write(tmp_path, "config_files:\n  - path: /x\n    strategy: merge\n")
        with pytest.raises(ConfigError, match=r"config_files\[0\]\.strategy: expected one of append, override, "
                                              r"add-only, got 'merge' \(.*falco.yaml:3\)"):
            load_config(main)


class TestOverrides:
    def test_falco_keys_and_syntax(self, tmp_path: Path) -> None:
        """-o takes Falco's keys, `key[]=` appends, `key[N].sub=` sets inside an item."""
        main = write(tmp_path, "append_output:\n  - suggested_output: true\nrules_files: [/a.yaml]\n")
        config = load_config(main, overrides=[
            "json_output=true", "rules_files[]=/b.yaml", "append_output[0].extra_output=on CPU %evt.cpu",
            "append_output[1].match.source=k8s_audit", "file_output.filename=/tmp/alerts.json"])
        assert config.outputs.stdout.format == "json" and config.outputs.file.format == "json"
        assert config.rules_files == ("/a.yaml", "/b.yaml")
        first, second = config.append_output
        assert (first.suggested_output, first.extra_output) == (True, "on CPU %evt.cpu")
        assert second.match.source == "k8s_audit" and config.outputs.file.path == "/tmp/alerts.json"

    def test_an_item_past_the_end_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"override 'append_output\[3\]\.extra_output=x': append_output has "
                                              r"1 items, no item 3"):
            load_config(write(tmp_path, "append_output: [{suggested_output: true}]\n"),
                        overrides=["append_output[3].extra_output=x"])

    def test_an_unsupported_override_names_the_override(self, tmp_path: Path) -> None:
        assert unsupported(write(tmp_path, ""), ("libs_logger.enabled=false",)) == {
            "libs_logger": "-o libs_logger.enabled=false"}

    def test_a_type_mistake_names_the_falco_key_and_override(self) -> None:
        with pytest.raises(ConfigError, match=r"outputs.file.keep_alive: expected true or false, got 'yes please' "
                                              r"\(-o file_output.keep_alive=yes please\)"):
            load_config(overrides=["file_output.keep_alive=yes please"])


class TestConflicts:
    def test_a_falco_key_and_an_agent_key_saying_different_things_are_refused(self, tmp_path: Path) -> None:
        """Both places are named; the same value twice is fine."""
        main = write(tmp_path, "file_output:\n  filename: /a.log\noutputs:\n  file:\n    path: /b.log\n")
        with pytest.raises(ConfigError) as caught:
            load_config(main)
        message = str(caught.value)
        assert "file_output.filename" in message and "falco.yaml:2" in message
        assert "outputs.file.path" in message and "falco.yaml:5" in message
        same = write(tmp_path, "file_output:\n  filename: /a.log\noutputs:\n  file:\n    path: /a.log\n", "same.yaml")
        assert load_config(same).outputs.file.path == "/a.log"

    def test_an_override_wins_over_the_file_in_either_spelling(self, tmp_path: Path) -> None:
        """-o, written as Falco's key or the agent's, wins over the file's other spelling."""
        main = write(tmp_path, "engine:\n  kind: modern_ebpf\nstdout_output: {enabled: true}\n")
        config = load_config(main, overrides=["sources.kernel.enabled=false", "outputs.stdout.enabled=false"])
        assert not config.sources.kernel.enabled and not config.outputs.stdout.enabled
        agent_file = write(tmp_path, "sources:\n  kernel:\n    enabled: true\n", "agent.yaml")
        assert not load_config(agent_file, overrides=["engine.kind=nodriver"]).sources.kernel.enabled


class TestPlugins:
    def test_k8saudit_webhook_entry(self, tmp_path: Path) -> None:
        """open_params http://:PORT/PATH is the webhook on every interface; init_config sizes map onto it."""
        main = write(tmp_path, "load_plugins: [k8saudit, json]\nplugins:\n"
                               "  - name: k8saudit\n    library_path: libk8saudit.so\n"
                               "    init_config: {maxEventSize: 4096, webhookMaxBatchSize: 65536, useAsync: true}\n"
                               "    open_params: 'http://:9765/k8s-audit'\n"
                               "  - name: json\n    library_path: libjson.so\n")
        config = load_config(main)
        k8s = config.sources.k8s_audit
        assert k8s.enabled and (k8s.webhook.listen, k8s.webhook.path) == ("0.0.0.0:9765", "/k8s-audit")
        assert (k8s.webhook.max_event_bytes, k8s.webhook.max_body_bytes) == (4096, 65536)
        assert k8s.webhook.tls is None and not config.sources.aws_cloudtrail.enabled
        port_zero = write(tmp_path, "plugins: [{name: k8saudit, library_path: x.so, open_params: 'http://[::1]:0/a'}]\n",
                          "zero.yaml")
        assert load_config(port_zero).sources.k8s_audit.webhook.listen == "[::1]:0"  # 0 asks for a free port
        assert config.plugins == () and config.load_plugins == ()  # served by built-in sources: nothing loaded
        assert config.unsupported_keys == ()

    def test_k8saudit_https_and_file_entries(self, tmp_path: Path) -> None:
        """https takes sslCertificate (one PEM, certificate and key) as TLS; a path is read once, webhook off."""
        https = write(tmp_path, "plugins:\n  - name: k8saudit\n    library_path: libk8saudit.so\n"
                                "    init_config: '{\"sslCertificate\": \"/etc/falco/audit.pem\"}'\n"
                                "    open_params: 'https://127.0.0.1:8443/audit'\n", "https.yaml")
        webhook = load_config(https).sources.k8s_audit.webhook
        assert webhook.listen == "127.0.0.1:8443" and webhook.tls is not None
        assert (webhook.tls.cert_file, webhook.tls.key_file) == ("/etc/falco/audit.pem", "/etc/falco/audit.pem")
        path = write(tmp_path, "plugins:\n  - {name: k8saudit, library_path: x.so, open_params: /var/log/audit.log}\n",
                     "path.yaml")
        k8s = load_config(path).sources.k8s_audit
        assert not k8s.webhook.enabled and k8s.files.paths == ("/var/log/audit.log",) and not k8s.files.follow

    def test_cloudtrail_s3_entry(self, tmp_path: Path) -> None:
        """s3:// names bucket and prefix; init_config keys match in any case, as Go's JSON matches them."""
        main = write(tmp_path, "plugins:\n  - name: cloudtrail\n    library_path: libcloudtrail.so\n"
                               "    init_config:\n      s3DownloadConcurrency: 16\n      S3AccountList: '111, 222'\n"
                               "      sqsDelete: false\n      aws: {region: eu-west-1, profile: audit}\n"
                               "    open_params: s3://trail-bucket/org/\n")
        config = load_config(main)
        trail = config.sources.aws_cloudtrail
        assert trail.enabled and (trail.s3.bucket, trail.s3.prefix, trail.s3.accounts) == (
            "trail-bucket", "org", ("111", "222"))
        assert (trail.s3.concurrency, trail.aws.region, trail.aws.profile) == (16, "eu-west-1", "audit")
        assert {k.key for k in config.unsupported_keys} == {"plugins[0].init_config.sqsDelete"}
        assert not config.sources.k8s_audit.enabled

    def test_a_log_folder_in_the_s3_path_names_account_and_region(self, tmp_path: Path) -> None:
        main = write(tmp_path, "plugins:\n  - name: cloudtrail\n    library_path: libcloudtrail.so\n"
                               "    open_params: s3://b/trail/AWSLogs/123456789012/CloudTrail/us-east-1/2026/\n")
        s3 = load_config(main).sources.aws_cloudtrail.s3
        assert (s3.prefix, s3.accounts, s3.regions) == ("trail", ("123456789012",), ("us-east-1",))

    def test_cloudtrail_sqs_and_folder_entries(self, tmp_path: Path) -> None:
        sqs = write(tmp_path, "plugins:\n  - name: cloudtrail\n    library_path: libcloudtrail.so\n"
                              "    init_config: {s3DownloadConcurrency: 3}\n    open_params: sqs://trail-queue\n")
        trail = load_config(sqs).sources.aws_cloudtrail
        assert (trail.sqs.queue_url, trail.sqs.concurrency, trail.s3.bucket) == ("trail-queue", 3, "")
        folder = write(tmp_path, "plugins:\n  - {name: cloudtrail, library_path: x.so, open_params: /logs}\n", "d.yaml")
        directory = load_config(folder).sources.aws_cloudtrail.directory
        assert directory.paths == ("/logs",) and not directory.follow

    def test_an_unknown_init_config_key_is_refused(self, tmp_path: Path) -> None:
        main = write(tmp_path, "plugins:\n  - name: k8saudit\n    library_path: x.so\n"
                               "    init_config: {maxEventSise: 1}\n")
        with pytest.raises(ConfigError, match=r"plugins\[0\]\.init_config\.maxEventSise: not a key of the "
                                              r"k8saudit plugin's init_config \(.*falco.yaml:4\); its keys: "):
            load_config(main)

    def test_load_plugins_empty_keeps_the_plugin_sources_off_unless_the_agent_keys_say(self, tmp_path: Path) -> None:
        """A Falco-style `load_plugins: []` runs no webhook and no trail input; the agent's own section keeps them."""
        off = load_config(write(tmp_path, "load_plugins: []\n"))
        assert not off.sources.k8s_audit.enabled and not off.sources.aws_cloudtrail.enabled
        kept = load_config(write(tmp_path, "load_plugins: []\nsources:\n  k8s_audit: {enabled: true}\n", "a.yaml"))
        assert kept.sources.k8s_audit.enabled and not kept.sources.aws_cloudtrail.enabled
        assert load_config(write(tmp_path, "rule_matching: all\n", "b.yaml")).sources.k8s_audit.enabled

    def test_an_unselected_entry_is_not_read(self, tmp_path: Path) -> None:
        """As Falco: an entry load_plugins does not name is not used, whatever it says."""
        main = write(tmp_path, "load_plugins: []\nplugins:\n  - name: k8saudit\n    library_path: x.so\n"
                               "    init_config: {bogus: 1}\n    open_params: 'http://:1/x'\n")
        assert not load_config(main).sources.k8s_audit.enabled


class TestKeys:
    @pytest.mark.parametrize(("text", "setting", "expected"), [
        ("priority: WARNING\n", "priority", "warning"),
        ("log_level: notice\n", "logging.level", "info"),
        ("log_level: critical\n", "logging.level", "error"),
        ("engine: {kind: nodriver}\n", "sources.kernel.enabled", False),
        ("engine: {kind: kmod, kmod: {buf_size_preset: 6}, modern_ebpf: {buf_size_preset: 1}}\n",
         "sources.kernel.ring_buffer_pages", 8192),
        ("syscall_event_drops: {threshold: 0.5, actions: [ignore], rate: 0.1}\n", "sources.kernel.drops.threshold",
         1.0),
        ("syscall_event_drops: {rate: 0.5}\n", "sources.kernel.drops.alert_interval_s", 2.0),
        ("http_output: {insecure: true}\n", "outputs.http.verify_tls", False),
        ("http_output: {ca_cert: '', ca_bundle: /b.pem, ca_path: /certs}\n", "outputs.http.ca_file", "/b.pem"),
        ("http_output: {ca_cert: '', ca_bundle: /b.pem, ca_path: /certs}\n", "outputs.http.ca_path", ""),
        ("http_output: {mtls: true, client_cert: /c.pem, client_key: /k.pem}\n", "outputs.http.client_key", "/k.pem"),
        ("outputs_queue: {capacity: 100}\n", "outputs.queue_capacity", 100),
        ("json_include_message_property: true\n", "outputs.json.include_message", True),
        ("rules_file: /etc/falco/old.yaml\n", "rules_files", ("/etc/falco/old.yaml",)),
        ("program_output: {enabled: true, program: 'logger -t falco'}\n", "outputs.program.command",
         "logger -t falco"),
    ])
    def test_falcos_meaning(self, tmp_path: Path, text: str, setting: str, expected: object) -> None:
        config: object = load_config(write(tmp_path, text))
        for part in setting.split("."):
            config = getattr(config, part)
        assert config == expected

    def test_extra_fields_in_falcos_forms(self, tmp_path: Path) -> None:
        """A field name gets the format %name; a one-key mapping is name: format."""
        main = write(tmp_path, "append_output:\n  - match: {source: syscall, tags: [container]}\n"
                               "    extra_fields:\n      - evt.hostname\n      - home: '${HOME}'\n")
        [entry] = load_config(main, environ={"HOME": "/root"}).append_output
        assert [(f.name, f.format) for f in entry.extra_fields] == [("evt.hostname", "%evt.hostname"),
                                                                    ("home", "/root")]
        assert (entry.match.source, entry.match.tags) == ("syscall", ("container",))

    def test_replay_and_simulated_drops_are_not_supported(self, tmp_path: Path) -> None:
        main = write(tmp_path, "engine:\n  kind: replay\n  replay: {capture_file: /x.scap}\n"
                               "syscall_event_drops:\n  actions: [log]\n  simulate_drops: true\n  max_burst: 1\n")
        assert sorted(unsupported(main)) == ["engine.kind", "engine.replay", "syscall_event_drops.actions",
                                             "syscall_event_drops.simulate_drops"]

    def test_an_unknown_top_level_key_in_a_falco_file_is_warned_with_the_closest_key(self, tmp_path: Path) -> None:
        """As Falco: a falco.yaml with a key neither knows loads, the key listed with a suggestion."""
        main = write(tmp_path, "json_output: true\nrule_matchin: all\n")
        [key] = load_config(main).unsupported_keys
        assert (key.key, key.where) == ("rule_matchin", f"{main}:2") and "did you mean rule_matching?" in key.reason

    def test_an_unknown_key_in_an_agent_file_or_a_falco_section_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"rule_matchin: unknown key"):
            load_config(write(tmp_path, "rule_matching: all\nrule_matchin: all\n"))
        with pytest.raises(ConfigError, match=r"file_output.filenam: unknown key \(.*falco.yaml:1\); known keys "
                                              r"here: enabled, filename, keep_alive"):
            load_config(write(tmp_path, "file_output: {filenam: x}\n"))

    @pytest.mark.parametrize(("text", "needle"), [
        ("engine: {kind: bpf}\n", "engine.kind: expected one of kmod, ebpf, modern_ebpf, nodriver, replay, gvisor"),
        ("engine: {kind: kmod, kmod: {buf_size_preset: 0}}\n", "engine.kmod.buf_size_preset: must be 1 to 10"),
        ("syscall_event_drops: {rate: 0}\n", "syscall_event_drops.rate: must be > 0"),
        ("priority: loud\n", "priority: expected one of emergency"),
        ("json_output: maybe\n", "json_output: expected true or false, got 'maybe'"),
    ])
    def test_bad_values_name_the_falco_key_and_line(self, tmp_path: Path, text: str, needle: str) -> None:
        with pytest.raises(ConfigError) as caught:
            load_config(write(tmp_path, text))
        assert needle in str(caught.value) and "falco.yaml:1" in str(caught.value)


def test_s3_interval_forms() -> None:
    """s3Interval's start: a duration before now, an RFC 3339 time, or the first of a range."""
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert s3_interval_start("48h", now) == (date(2026, 3, 8), False)
    assert s3_interval_start("2026-01-05T10:00:00Z", now) == (date(2026, 1, 5), False)
    assert s3_interval_start("72h-24h", now) == (date(2026, 3, 7), True)
    assert s3_interval_start("2026-01-01T00:00:00Z-2026-01-02T00:00:00Z", now) == (date(2026, 1, 1), True)
    assert s3_interval_start("soon", now) is None

"""The shipped `rules/aws_cloudtrail.yaml`: it loads cleanly, fires and stays quiet on its fixtures, and catches
the Stratus Red Team detonations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.builtin_sources import new_engine, recorded_decoders
from agent.engine.engine import Engine
from agent.errors import DecodeError
from agent.event import Event

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "rules" / "aws_cloudtrail.yaml"
FIXTURES = ROOT / "tests" / "fixtures" / "rules" / "aws_cloudtrail"
TUNING_FILE = ROOT / "tests" / "fixtures" / "rules" / "tuning" / "aws_cloudtrail_local.yaml"
STRATUS = ROOT.parent / "shared" / "reference" / "samples" / "cloudtrail" / "stratus"
SOURCE = "aws_cloudtrail"

#: Rules expected to fire on each Stratus Red Team detonation log, with how many alerts each raises.
STRATUS_EXPECTED: dict[str, dict[str, int]] = {
    "aws.credential-access.ec2-get-password-data": {"EC2 Windows Password Retrieval Attempted": 30},
    "aws.credential-access.secretsmanager-batch-retrieve-secrets": {"Secrets Manager Batch Retrieval": 5},
    "aws.credential-access.ssm-retrieve-securestring-parameters": {"SSM Parameters Decrypted In Bulk": 5},
    "aws.defense-evasion.cloudtrail-event-selectors": {"CloudTrail Trail Settings Changed": 1},
    "aws.defense-evasion.dns-delete-logs": {"Route 53 Resolver Query Logging Removed": 1},
    "aws.defense-evasion.vpc-remove-flow-logs": {"VPC Flow Logs Removed": 1},
    "aws.execution.ec2-launch-unusual-instances": {"GPU Instance Launch Attempted": 1},
    "aws.execution.ssm-send-command": {"SSM Command Sent To Instances": 1},
    "aws.exfiltration.ec2-security-group-open-port-22-ingress": {"Security Group Opened To Internet On Admin Port": 1},
    "aws.exfiltration.ec2-share-ebs-snapshot": {"EBS Snapshot Shared With Another Account": 1},
    "aws.impact.bedrock-invoke-model": {"Bedrock Model Access Enabled": 3},
    "aws.lateral-movement.ec2-instance-connect": {"EC2 Instance Connect Key Pushed": 3},
    "aws.persistence.iam-backdoor-role": {"IAM Role Trust Policy Modified": 1},
    "aws.persistence.iam-create-admin-user": {
        "IAM User Provisioned": 1,
        "Access Key Issued For Another IAM User": 1,
        "Administrator Policy Attached": 1,
    },
    "aws.persistence.iam-create-user-login-profile": {"Console Password Set For Another IAM User": 1},
    "aws.persistence.lambda-layer-extension": {"Lambda Function Layers Changed": 1},
    "aws.persistence.rolesanywhere-create-trust-anchor": {"IAM Roles Anywhere Trust Anchor Registered": 1},
    "aws.privilege-escalation.iam-update-user-login-profile": {"Console Password Set For Another IAM User": 1},
}


def rule_names(path: Path) -> list[str]:
    """Names of the full rule definitions in a rules file, in file order."""
    return [item["rule"] for item in yaml.safe_load(path.read_text()) if isinstance(item, dict) and "condition" in item
            and "rule" in item]


def fixture_cases() -> list[Any]:
    params = []
    for path in sorted(FIXTURES.glob("*.json")):
        doc = json.loads(path.read_text())
        for expect in ("fires", "quiet"):
            for index, case in enumerate(doc[expect]):
                params.append(pytest.param(doc["rule"], expect, case["event"],
                                           id=f"{path.stem}-{expect}-{index}-{case['case']}"))
    return params


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = new_engine(rule_matching="all")
    result = engine.load_rules_files([RULES_FILE])
    assert result.successful, [p.as_text() for p in result.problems]
    return engine


@pytest.fixture(scope="module")
def tuned() -> Engine:
    """The shipped rules plus the local tuning file that appends exception values and list items."""
    engine = new_engine(rule_matching="all")
    result = engine.load_rules_files([RULES_FILE, TUNING_FILE])
    assert result.problems == [], [p.as_text() for p in result.problems]
    return engine


def decode(document: Any) -> list[Event]:
    decoder = next(d for d in recorded_decoders(hostname="test") if d.source == SOURCE)
    items = list(decoder.events(document, origin="fixture"))
    errors = [item for item in items if isinstance(item, DecodeError)]
    assert not errors, [e.message for e in errors]
    return items


class TestRulesFile:
    def test_loads_without_errors_or_warnings(self) -> None:
        """The shipped aws_cloudtrail rules load with no error and no warning."""
        result = new_engine().load_rules_files([RULES_FILE])
        assert result.problems == [], [p.as_text() for p in result.problems]

    def test_every_rule_is_a_cloudtrail_rule(self) -> None:
        """Every loaded rule belongs to the aws_cloudtrail source, so none is silently skipped."""
        engine = new_engine()
        engine.load_rules_files([RULES_FILE])
        assert {rule.source for rule in engine.rules} == {SOURCE}
        assert len(engine.rules) == len(rule_names(RULES_FILE))

    def test_every_rule_has_a_fixture(self) -> None:
        """Adding a rule without a fixture file (or leaving a fixture for a removed rule) fails."""
        covered = {json.loads(p.read_text())["rule"] for p in FIXTURES.glob("*.json")}
        assert covered == set(rule_names(RULES_FILE))

    def test_every_fixture_has_both_kinds_of_case(self) -> None:
        """Each fixture holds at least one record that fires and one near miss that stays quiet."""
        for path in FIXTURES.glob("*.json"):
            doc = json.loads(path.read_text())
            assert doc["fires"] and doc["quiet"], path.name

    def test_every_rule_has_a_mitre_technique_tag(self) -> None:
        """Every rule is tagged with at least one MITRE ATT&CK technique id."""
        engine = new_engine()
        engine.load_rules_files([RULES_FILE])
        for rule in engine.rules:
            assert any(tag.startswith("T1") for tag in rule.tags), rule.name


@pytest.mark.parametrize(("rule", "expect", "record"), fixture_cases())
def test_fixture_record(engine: Engine, rule: str, expect: str, record: dict[str, Any]) -> None:
    """A fixture's "fires" records raise the named rule and its "quiet" records do not."""
    fired = [alert.rule for ev in decode({"Records": [record]}) for alert in engine.process(ev)]
    if expect == "fires":
        assert rule in fired
    else:
        assert rule not in fired


class TestTuning:
    @staticmethod
    def record(fixture: str) -> dict[str, Any]:
        doc = json.loads((FIXTURES / fixture).read_text())
        record: dict[str, Any] = json.loads(json.dumps(doc["fires"][0]["event"]))
        return record

    def fired(self, engine: Engine, record: dict[str, Any]) -> list[str]:
        return [alert.rule for ev in decode({"Records": [record]}) for alert in engine.process(ev)]

    def test_appended_single_field_exception(self, tuned: Engine) -> None:
        """A document appended to the known_documents exception no longer raises the SSM rule."""
        record = self.record("ssm_command_sent_to_instances.json")
        assert "SSM Command Sent To Instances" in self.fired(tuned, record)
        record["requestParameters"]["documentName"] = "AWS-RunPatchBaseline"
        assert "SSM Command Sent To Instances" not in self.fired(tuned, record)

    def test_appended_tuple_exception(self, tuned: Engine) -> None:
        """An appended (caller, target) pair silences exactly that pair."""
        record = self.record("access_key_issued_for_another_iam_user.json")
        record["userIdentity"]["userName"] = "iam-provisioner"
        record["requestParameters"]["userName"] = "svc-backup"
        assert "Access Key Issued For Another IAM User" not in self.fired(tuned, record)
        record["requestParameters"]["userName"] = "svc-billing"
        assert "Access Key Issued For Another IAM User" in self.fired(tuned, record)


@pytest.mark.parametrize("technique", sorted(STRATUS_EXPECTED))
def test_stratus_detonation(engine: Engine, technique: str) -> None:
    """Each Stratus Red Team detonation log raises exactly the rules listed for its technique."""
    path = STRATUS / f"{technique}.json"
    if not path.is_file():
        pytest.skip(f"Stratus sample not available: {path}")
    counts: dict[str, int] = {}
    for ev in decode(json.loads(path.read_text())):
        for alert in engine.process(ev):
            counts[alert.rule] = counts.get(alert.rule, 0) + 1
    assert counts == STRATUS_EXPECTED[technique]


def test_stratus_table_covers_every_sample() -> None:
    """The expectation table names every detonation log in the reference folder, detected or not."""
    if not STRATUS.is_dir():
        pytest.skip(f"Stratus samples not available: {STRATUS}")
    assert {p.stem for p in STRATUS.glob("*.json")} == set(STRATUS_EXPECTED)

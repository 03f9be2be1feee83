"""The shipped `rules/aws_cloudtrail.yaml`: it loads cleanly, local tuning silences what it names, and it catches
the Stratus Red Team detonations (its cases, rules/tests/aws_cloudtrail.tests.yaml, run through `falco-agent rules
test`: tests/agent/rule_tests/test_shipped_cases.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from agent.engine.engine import Engine
from tests.support.rules_harness import RulesFileChecks, decode, fired, loaded_engine, shipped_cases

ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = ROOT / "rules" / "aws_cloudtrail.yaml"
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


@pytest.fixture(scope="module")
def engine() -> Engine:
    return loaded_engine(RULES_FILE)


@pytest.fixture(scope="module")
def tuned() -> Engine:
    """The shipped rules plus the local tuning file that appends exception values and list items."""
    return loaded_engine(RULES_FILE, TUNING_FILE, clean=True)


class TestRulesFile(RulesFileChecks):
    RULES_FILE = RULES_FILE
    SOURCE = SOURCE


class TestTuning:
    @staticmethod
    def record(rule: str) -> dict[str, Any]:
        """A copy of the record of the rule's first case expecting a match."""
        case = next(c for c in shipped_cases(RULES_FILE) if c.rule == rule and c.expect.matches)
        record: dict[str, Any] = copy.deepcopy(case.input.documents[0])
        return record

    def fired(self, engine: Engine, record: dict[str, Any]) -> list[str]:
        return fired(engine, {"Records": [record]}, SOURCE)

    def test_appended_single_field_exception(self, tuned: Engine) -> None:
        """A document appended to the known_documents exception no longer raises the SSM rule."""
        record = self.record("SSM Command Sent To Instances")
        assert "SSM Command Sent To Instances" in self.fired(tuned, record)
        record["requestParameters"]["documentName"] = "AWS-RunPatchBaseline"
        assert "SSM Command Sent To Instances" not in self.fired(tuned, record)

    def test_appended_tuple_exception(self, tuned: Engine) -> None:
        """An appended (caller, target) pair silences exactly that pair."""
        record = self.record("Access Key Issued For Another IAM User")
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
    for ev in decode(json.loads(path.read_text()), SOURCE):
        for alert in engine.process(ev):
            counts[alert.rule] = counts.get(alert.rule, 0) + 1
    assert counts == STRATUS_EXPECTED[technique]


def test_stratus_table_covers_every_sample() -> None:
    """The expectation table names every detonation log in the reference folder, detected or not."""
    if not STRATUS.is_dir():
        pytest.skip(f"Stratus samples not available: {STRATUS}")
    assert {p.stem for p in STRATUS.glob("*.json")} == set(STRATUS_EXPECTED)

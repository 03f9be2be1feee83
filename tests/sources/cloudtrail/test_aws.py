"""AWS sessions as the agent makes them: against the local endpoint, with and without a role to assume."""

from __future__ import annotations

import pytest

from sources.cloudtrail.aws import AwsSettings, make_client, make_session

pytestmark = pytest.mark.server


def test_session_reaches_the_endpoint(aws_endpoint: str) -> None:
    """A client from the settings talks to the configured endpoint."""
    settings = AwsSettings(region="us-east-1", endpoint_url=aws_endpoint)
    s3 = make_client(make_session(settings), "s3", settings)
    s3.create_bucket(Bucket="aws-session-check")
    assert "aws-session-check" in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_role_is_assumed(aws_endpoint: str) -> None:
    """With role_arn, calls are made with the assumed role's temporary credentials."""
    settings = AwsSettings(region="us-east-1", endpoint_url=aws_endpoint,
                           role_arn="arn:aws:iam::123456789012:role/falco-agent-reader")
    session = make_session(settings)
    credentials = session.get_credentials()
    assert credentials is not None and credentials.token
    identity = make_client(session, "sts", settings).get_caller_identity()
    assert "assumed-role/falco-agent-reader" in identity["Arn"]

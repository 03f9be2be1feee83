"""boto3 sessions and clients from the agent's AWS settings: region, profile, role to assume, endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """Where and as whom to call AWS. Empty values leave boto3's own defaults (its credential chain)."""

    region: str = ""
    profile: str = ""
    role_arn: str = ""
    endpoint_url: str = ""
    max_pool_connections: int = 16


def make_session(settings: AwsSettings) -> boto3.Session:
    """A session for the profile, switched to the role when one is given."""
    session = boto3.Session(profile_name=settings.profile or None, region_name=settings.region or None)
    if not settings.role_arn:
        return session
    sts = session.client("sts", endpoint_url=settings.endpoint_url or None)
    credentials = sts.assume_role(RoleArn=settings.role_arn, RoleSessionName="falco-agent")["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=settings.region or session.region_name,
    )


def make_client(session: boto3.Session, service: str, settings: AwsSettings) -> Any:
    """A client with retries and a connection pool sized for concurrent downloads."""
    config = Config(retries={"max_attempts": 5, "mode": "standard"},
                    max_pool_connections=settings.max_pool_connections)
    return session.client(service, endpoint_url=settings.endpoint_url or None, config=config)

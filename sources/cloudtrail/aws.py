"""boto3 sessions and clients from the agent's AWS settings: region, profile, role to assume, endpoint."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.credentials
import botocore.loaders
import botocore.session
from botocore.config import Config

_ROLE_SESSION_NAME = "falco-agent"


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """Where and as whom to call AWS. Empty values leave boto3's own defaults (its credential chain)."""

    region: str = ""
    profile: str = ""
    role_arn: str = ""
    endpoint_url: str = ""
    max_pool_connections: int = 16


@functools.cache
def _shared_loader() -> botocore.loaders.Loader:
    # Service models are read-only data; loading them once saves seconds per new session.
    return botocore.loaders.create_loader()


def make_session(settings: AwsSettings) -> boto3.Session:
    """A session for the profile; with a role, its credentials are assumed and refreshed before they expire."""
    core = botocore.session.Session(profile=settings.profile or None)
    core.register_component("data_loader", _shared_loader())
    if settings.role_arn:
        sts = boto3.Session(botocore_session=core, region_name=settings.region or None).client(
            "sts", endpoint_url=settings.endpoint_url or None)

        def assume() -> dict[str, str]:
            found = sts.assume_role(RoleArn=settings.role_arn, RoleSessionName=_ROLE_SESSION_NAME)["Credentials"]
            expiry = found["Expiration"]
            if isinstance(expiry, datetime):
                expiry = expiry.astimezone(UTC).isoformat()
            return {"access_key": found["AccessKeyId"], "secret_key": found["SecretAccessKey"],
                    "token": found["SessionToken"], "expiry_time": expiry}

        refreshable = botocore.credentials.RefreshableCredentials.create_from_metadata(
            metadata=assume(), refresh_using=assume, method="sts-assume-role")
        role_core = botocore.session.Session()
        role_core.register_component("data_loader", _shared_loader())
        role_core._credentials = refreshable  # botocore reads the session's credentials from here
        core = role_core
    return boto3.Session(botocore_session=core, region_name=settings.region or None)


def make_client(session: boto3.Session, service: str, settings: AwsSettings) -> Any:
    """A client with retries and a connection pool sized for concurrent downloads."""
    config = Config(retries={"max_attempts": 5, "mode": "standard"},
                    max_pool_connections=settings.max_pool_connections)
    return session.client(service, endpoint_url=settings.endpoint_url or None, config=config)

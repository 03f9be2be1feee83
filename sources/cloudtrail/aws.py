"""boto3 sessions and clients from the agent's AWS settings (region, profile, role to assume, endpoint), and how the
AWS inputs tell, describe and back off from a failed call."""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.credentials
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

_ROLE_SESSION_NAME = "falco-agent"
#: What a failed AWS call raises.
AWS_ERRORS = (ClientError, BotoCoreError)
#: Error codes of a call refused for its rate (botocore's own retries gave up on it).
THROTTLING_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
                              "LimitExceededException"})
_BACKOFF_BASE_S = 0.5
_BACKOFF_MAX_S = 30.0


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


def backoff_s(failures: int) -> float:
    """Exponential, capped, with jitter so that agents failing together do not retry together."""
    ceiling = min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2.0 ** max(failures - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def describe(exc: Exception) -> str:
    """An AWS error as `Code: message`."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc)


def is_throttling(exc: Exception) -> bool:
    """Whether AWS refused the call for its rate."""
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in THROTTLING_CODES

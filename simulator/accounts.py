"""Provider-side accounts of the simulated Anthropic: their tokens and their behaviour knobs."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

FIVE_HOURS = 5 * 3600
SEVEN_DAYS = 7 * 24 * 3600


def new_access_token() -> str:
    """A fresh access token in the real format's shape."""
    return "sk-ant-oat01-sim-" + secrets.token_urlsafe(24)


def new_refresh_token() -> str:
    """A fresh refresh token in the real format's shape."""
    return "sk-ant-ort01-sim-" + secrets.token_urlsafe(24)


def org_uuid(name: str) -> str:
    """The same organisation name always has the same uuid."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "sim-org:" + name))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), tz=UTC).isoformat()


def _next_reset(anchor: float, period: int, now: float) -> float:
    if anchor > now:
        return anchor
    return anchor + ((now - anchor) // period + 1) * period


class SimAccount:
    """One account on the provider side.

    Read `uuid`, `email`, `organization`, `refresh_token` (the current valid one) and
    `access_token` (the current one). Set `usage` (a dict: the usage JSON body; None restores the
    default windows below), `policy_blocked` (usage, profile and Messages answer 403
    permission_error) and `revoked` (refreshes answer invalid_grant, the others 401). The tokens
    change only through the simulator, under its lock.

    The default usage body reads `five_hour_utilization` and `seven_day_utilization` (percent,
    10 and 20) and `five_hour_resets_at`/`seven_day_resets_at` (epoch seconds; None: windows
    rolling from the account's creation). The Messages API's rate-limit headers are derived from
    the usage body, so both always agree; `ratelimit_status` overrides the derived
    `anthropic-ratelimit-unified-status`. `stream_chunks` and `chunk_delay` (seconds before each
    text delta) shape this account's streamed answers; None uses the simulator's.
    """

    __slots__ = (
        "_five_hour_anchor",
        "_seven_day_anchor",
        "_usage",
        "access_expires_at",
        "access_lifetime",
        "access_token",
        "chunk_delay",
        "email",
        "five_hour_resets_at",
        "five_hour_utilization",
        "organization",
        "organization_uuid",
        "policy_blocked",
        "ratelimit_status",
        "refresh_token",
        "revoked",
        "seven_day_resets_at",
        "seven_day_utilization",
        "stream_chunks",
        "uuid",
    )

    def __init__(
        self,
        *,
        email: str,
        organization: str,
        organization_uuid: str,
        usage: dict[str, Any] | None,
        access_lifetime: int,
        account_uuid: str | None = None,
        now: float | None = None,
    ) -> None:
        created = time.time() if now is None else now
        self.uuid: str = account_uuid or str(uuid.uuid4())
        self.email: str = email
        self.organization: str = organization
        self.organization_uuid: str = organization_uuid
        self.access_lifetime: int = access_lifetime
        self.refresh_token: str = new_refresh_token()
        self.access_token: str = new_access_token()
        self.access_expires_at: float = created + access_lifetime
        self.policy_blocked: bool = False
        self.revoked: bool = False
        self.five_hour_utilization: float = 10.0
        self.seven_day_utilization: float = 20.0
        self.five_hour_resets_at: float | None = None
        self.seven_day_resets_at: float | None = None
        self.ratelimit_status: str | None = None
        self.stream_chunks: int | None = None
        self.chunk_delay: float | None = None
        self._usage: dict[str, Any] | None = usage
        self._five_hour_anchor = created + 3 * 3600
        self._seven_day_anchor = created + 4 * 24 * 3600

    def __repr__(self) -> str:
        return f"<SimAccount {self.email} {self.uuid}>"

    @property
    def usage(self) -> dict[str, Any]:
        """The usage JSON body this account answers with."""
        if self._usage is not None:
            return self._usage
        now = time.time()
        five_hour_reset = self.five_hour_resets_at or _next_reset(
            self._five_hour_anchor, FIVE_HOURS, now
        )
        seven_day_reset = self.seven_day_resets_at or _next_reset(
            self._seven_day_anchor, SEVEN_DAYS, now
        )
        return {
            "five_hour": {
                "utilization": float(self.five_hour_utilization),
                "resets_at": _iso(five_hour_reset),
            },
            "seven_day": {
                "utilization": float(self.seven_day_utilization),
                "resets_at": _iso(seven_day_reset),
            },
            "seven_day_oauth_apps": None,
            "seven_day_opus": None,
            "seven_day_sonnet": None,
            "limits": [],
            "extra_usage": {
                "is_enabled": False,
                "monthly_limit": None,
                "used_credits": None,
                "utilization": None,
            },
        }

    @usage.setter
    def usage(self, value: dict[str, Any] | None) -> None:
        self._usage = value

    @property
    def access_expired(self) -> bool:
        """True once the current access token is past its lifetime (real clock)."""
        return time.time() >= self.access_expires_at

    def expire_access_token(self) -> None:
        """Make the current access token expired now (usage/profile will answer 401)."""
        self.access_expires_at = time.time() - 1

    def identity(self) -> dict[str, Any]:
        """The `account` and `organization` objects of token and profile answers."""
        return {
            "account": {"uuid": self.uuid, "email_address": self.email},
            "organization": {"uuid": self.organization_uuid, "name": self.organization},
        }

"""The newcomers' demo: a team and a pool whose accounts show every reason code of DESIGN.md 3.3,
each reached by the real flows (onboarding, the cycle, a tool's reports, a lead's lever) against
the simulated provider. Never against the real provider: `simulator` is the only one it knows."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import TextField, Value
from django.utils import timezone

from simulator import Fault, SimAccount, SimulatedAnthropic

from .models import Account, ConsumerKey, Membership, Pool, QuotaPoint, QuotaWindow, Team
from .providers.anthropic import UsageWindow
from .services import keys, levers, onboarding, reports
from .services.checkout import checkout_create
from .services.cycle import cycle_run
from .services.quota_history import quota_points_record
from .services.reencrypt import secrets_verify
from .services.usage import usage_flush, usage_record
from .usage_meter import Tokens

ACTOR = "demo"
EXPIRING = 3600  # tokens that live one hour are due for refresh at once (lead: 4 hours)


@dataclass(frozen=True)
class Demo:
    lead: str
    lead_password: str
    member: str
    member_password: str
    api_token: str
    consumer_key: str
    pool: str
    paste_refresh_token: str  # a provider account not yet in the pool, for "Paste tokens"
    import_file: str  # a Claude Code credentials file of another, for "Upload a file"


def _user(username: str, *, staff: bool = False) -> tuple[User, str]:
    password = secrets.token_urlsafe(9)
    user, _ = User.objects.get_or_create(username=username)
    user.set_password(password)
    user.is_staff = user.is_superuser = staff
    user.save()
    return user, password


def _onboard(
    pool: Pool,
    sim: SimulatedAnthropic,
    label: str,
    *,
    usage: dict[str, Any] | None = None,
    access_lifetime: int = 28800,
    policy_blocked: bool = False,
) -> tuple[Account, SimAccount]:
    """A provider-side account, onboarded like a lead would: tokens checked with the provider,
    then a first quota check."""
    sim_account = sim.add_account(
        email=f"{label.replace(' ', '-')}@demo.test", usage=usage, access_lifetime=access_lifetime
    )
    sim_account.policy_blocked = policy_blocked
    result = onboarding.account_onboard_tokens(
        pool=pool, label=label, refresh_token=sim_account.refresh_token, actor=ACTOR
    )
    return result.account, sim_account


def _window(percent: float, hours: float) -> dict[str, Any]:
    resets = datetime.now(UTC) + timedelta(hours=hours)
    return {"utilization": percent, "resets_at": resets.isoformat()}


def demo_build(sim: SimulatedAnthropic) -> Demo:
    """Build the demo team. The simulator must already be the configured provider."""
    lead, lead_password = _user("demo-lead", staff=True)
    member, member_password = _user("demo-member")
    team, _ = Team.objects.get_or_create(slug="demo", defaults={"name": "Demo team"})
    Membership.objects.update_or_create(team=team, user=lead, defaults={"role": "lead"})
    Membership.objects.update_or_create(team=team, user=member, defaults={"role": "member"})
    Pool.objects.filter(slug="demo").delete()
    pool = Pool.objects.create(
        team=team, name="Demo pool", slug="demo", quota_interval=timedelta(seconds=30)
    )
    _, api_token = keys.api_token_create(user=lead, name="demo")
    key, consumer_key = keys.consumer_key_create(pool=pool, name="demo tool", created_by=lead)

    sims: dict[str, SimAccount] = {}  # the accounts that can serve, for the hour of traffic
    _, sims["healthy"] = _onboard(pool, sim, "healthy")
    _, sims["relay spare"] = _onboard(pool, sim, "relay spare")  # the relay fails over to it
    # The organisation forbids OAuth: the onboarding's first quota check answers 403.
    _onboard(pool, sim, "org policy", policy_blocked=True)
    full = {"five_hour": _window(100.0, 2), "seven_day": _window(40.0, 90)}
    _onboard(pool, sim, "quota exhausted", usage=full)
    _onboard(pool, sim, "quota unknown", usage={"five_hour": None, "seven_day": None})
    stale, sim_stale = _onboard(pool, sim, "quota stale")
    sims["quota stale"] = sim_stale
    # Its snapshot is an interval old, so the cycle below checks it (and fails) at once: the
    # newcomer sees quota_stale now rather than when the interval has passed.
    Account.objects.filter(pk=stale.pk).update(
        quota_checked_at=timezone.now() - pool.quota_interval
    )
    _, sim_relogin = _onboard(pool, sim, "needs re-login", access_lifetime=EXPIRING)
    _, sim_backoff = _onboard(pool, sim, "refresh backoff", access_lifetime=EXPIRING)
    disabled, _ = _onboard(pool, sim, "disabled")
    cooling, sims["rate limited"] = _onboard(pool, sim, "rate limited")
    rejected, sims["token rejected"] = _onboard(pool, sim, "token rejected")
    stranded, _ = _onboard(pool, sim, "unreadable")
    _strand(stranded)

    # The provider changes its mind; the cycle finds out.
    sim.revoke(sim_relogin)
    sim.inject("token", Fault.html(403), account=sim_backoff)
    sim.inject("usage", Fault.status(503), account=sim_stale)
    list(cycle_run(pool=pool))
    secrets_verify(now=timezone.now())  # the daily check finds the stranded account
    # A lead pulls a lever; a tool reports what the provider answered it.
    levers.account_disable(account=disabled, reason="left the team", actor="demo-lead")
    levers.account_update(account=cooling, priority=1, actor="demo-lead")
    levers.account_update(account=rejected, priority=2, actor="demo-lead")
    _check_out_and_report(key, cooling, status=429, retry_after="900")
    _check_out_and_report(key, rejected, status=401)
    laptop, _ = keys.consumer_key_create(pool=pool, name="demo laptop", created_by=lead)
    _an_hour_of_traffic(pool, [key, laptop], sims, datetime.now(UTC))
    # Accounts the provider has but the pool does not, for trying the other ways to add one.
    to_paste = sim.add_account(email="to-paste@demo.test")
    to_import = sim.add_account(email="to-import@demo.test")
    import_file = settings.VAR_DIR / "demo-claude-credentials.json"
    credentials = {
        "claudeAiOauth": {
            "accessToken": to_import.access_token,
            "refreshToken": to_import.refresh_token,
            "expiresAt": int(to_import.access_expires_at * 1000),
        }
    }
    import_file.write_text(json.dumps(credentials, indent=2))
    import_file.chmod(0o600)
    return Demo(
        lead=lead.get_username(),
        lead_password=lead_password,
        member=member.get_username(),
        member_password=member_password,
        api_token=api_token,
        consumer_key=consumer_key,
        pool=pool.slug,
        paste_refresh_token=to_paste.refresh_token,
        import_file=str(import_file),
    )


TRAFFIC_BURN = 60.0  # percentage points of the 5-hour window per hour, in the demo's last hour


def _an_hour_of_traffic(
    pool: Pool, tools: list[ConsumerKey], sims: dict[str, SimAccount], now: datetime
) -> None:
    """A simulated hour of relayed traffic on the accounts that can serve, as the relay would
    have left it: the 5-hour window observed rising each minute (quota history; the simulator's
    account agrees, so a later poll does not contradict it) and the tokens counted per key, so
    the pool page shows its usage chart and when the pool runs dry at this pace."""
    for label, sim_account in sims.items():
        account = Account.objects.get(pool=pool, label=label)
        window = account.quota_windows.filter(key="five_hour").first()
        if window is None or window.utilization is None:
            continue
        now_used = max(window.utilization, TRAFFIC_BURN)
        window.utilization = sim_account.five_hour_utilization = now_used
        window.save(update_fields=["utilization"])
        # The hour replaces what onboarding observed moments ago (a lower value, later in time).
        QuotaPoint.objects.filter(account=account, window="five_hour").delete()
        for minutes in range(60, -1, -1):
            used = now_used - TRAFFIC_BURN * minutes / 60
            observed = UsageWindow("five_hour", window.label, used, window.resets_at)
            at = now - timedelta(minutes=minutes)
            quota_points_record(account.pk, [observed], at, QuotaWindow.Source.RELAY)
        for minutes in range(0, 60, 2):
            for n, tool in enumerate(tools):
                usage_record(
                    pool_id=pool.pk,
                    key_id=tool.pk,
                    account_id=account.pk,
                    model="claude-sonnet-4-5",
                    tokens=Tokens(1200 + 300 * n, 400 + 50 * n, 0, 9000 * n),
                    status=200,
                    duration_ms=2500,
                    now=now - timedelta(minutes=minutes),
                )
    usage_flush()


def _strand(account: Account) -> None:
    """Its secrets re-written under a key nobody configured: a key rotation finished without
    `manage.py reencrypt`."""
    lost = Fernet(Fernet.generate_key())
    Account.objects.filter(pk=account.pk).update(
        **{
            name: Value(lost.encrypt(b"stranded").decode(), output_field=TextField())
            for name in ("access_token", "refresh_token")
        }
    )


def _check_out_and_report(
    key: ConsumerKey, account: Account, *, status: int, retry_after: str | None = None
) -> None:
    result = checkout_create(key_hash=key.key_hash)
    if result.account.pk != account.pk:
        raise RuntimeError(f"the demo's checkout picked {result.account} instead of {account}")
    reports.report_record(checkout=result.checkout, key=key, status=status, retry_after=retry_after)


RELAY_PROMPT = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Hello from the accounts-pool demo"}],
}


def demo_relay_traffic(
    sim: SimulatedAnthropic, relay_url: str, consumer_key: str, *, wait: float = 30.0
) -> list[str]:
    """Send a tool's requests through the relay process once it answers, so the pages show
    relayed traffic: a JSON answer, a stream, a token count, and a 429 that fails over to the
    next account (an event by the demo tool's key, a short cooldown). One line per request."""
    headers = {
        "authorization": f"Bearer {consumer_key}",
        "anthropic-version": "2023-06-01",
        "x-claude-code-session-id": "demo-session",
    }
    messages = f"{relay_url}/v1/messages"
    deadline = time.monotonic() + wait
    with httpx.Client(timeout=30) as client:
        while True:
            try:
                client.post(messages)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    return [f"the relay at {relay_url} did not answer within {wait:g} s"]
                time.sleep(0.25)
        sim.inject("messages", Fault.api_error(429, retry_after=60), times=1)
        said = []
        for path, body in (
            ("/v1/messages", RELAY_PROMPT),
            ("/v1/messages", RELAY_PROMPT | {"stream": True}),
            ("/v1/messages/count_tokens", {k: RELAY_PROMPT[k] for k in ("model", "messages")}),
        ):
            answer = client.post(f"{relay_url}{path}", json=body, headers=headers)
            said.append(
                f"POST {path}{' (stream)' if 'stream' in body else ''}: {answer.status_code}"
            )
        return said

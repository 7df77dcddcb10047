"""Notifications: each evaluation reads every account's verdict and every pool's usable count,
turns a change of condition into one message per channel (notifyrules: damping, hourly cap),
and delivery attempts send them, retried until delivered or 24 hours have passed."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q, prefetch_related_objects
from django.urls import reverse
from django.utils import timezone

from .. import notifyrules, selectors, usage_selectors
from ..models import Account, Channel, Delivery, DeliveryAttempt, NotificationSubject, Pool, Team
from ..notifyrules import Direction, Kind
from ..providers import notify as outside
from ..redaction import redact
from ..state import PoolForecast, Status

logger = logging.getLogger("accounts_pool.notifications")

CLAIM = timedelta(seconds=120)


@dataclass(frozen=True)
class Observation:
    """One subject's condition at this evaluation."""

    key: str
    pool: Pool
    account: Account | None
    kind: Kind
    holds: bool
    reason: str
    until: datetime | None
    usable: int
    total: int
    runs_dry_at: datetime | None = None  # the forecast's kind: when, at the last hour's pace


def _observations(
    pool: Pool,
    rows: list[selectors.AccountWithVerdict],
    now: datetime,
    *,
    forecast: PoolForecast,
    warned: bool,
) -> Iterator[Observation]:
    usable, total = notifyrules.usable_count(r.verdict.status for r in rows)
    for row in rows:
        if not row.account.enabled:
            continue  # a person took it out: its conditions are theirs to know, not news
        conditions = notifyrules.account_conditions(row.verdict, now)
        for kind in notifyrules.ACCOUNT_KINDS:
            yield Observation(
                key=f"account:{row.account.pk}:{kind}",
                pool=pool,
                account=row.account,
                kind=kind,
                holds=kind in conditions,
                reason=conditions.get(kind, ""),
                until=row.verdict.usable_at,
                usable=usable,
                total=total,
            )
    conditions = notifyrules.pool_conditions(
        usable=usable, total=total, minimum_usable=pool.minimum_usable
    )
    conditions |= notifyrules.forecast_conditions(forecast, now, warned=warned)
    for kind in notifyrules.POOL_KINDS:
        forecasting = kind == Kind.POOL_FORECAST_DRY
        yield Observation(
            key=pool_key(pool, kind),
            pool=pool,
            account=None,
            kind=kind,
            holds=kind in conditions,
            reason=conditions.get(kind, ""),
            # the forecast's "until" is when an account is usable again after it runs dry
            until=forecast.back_at if forecasting else selectors.next_change(rows),
            usable=usable,
            total=total,
            runs_dry_at=forecast.runs_dry_at if forecasting else None,
        )


def pool_key(pool: Pool, kind: Kind) -> str:
    return f"pool:{pool.pk}:{kind}"


def _site(path: str) -> str:
    return str(settings.ACCOUNTS_POOL_SITE_URL).rstrip("/") + path


def _iso(when: datetime | None) -> str | None:
    return when.isoformat().replace("+00:00", "Z") if when else None


def message_payload(seen: Observation, direction: Direction, now: datetime) -> dict[str, Any]:
    """The message as every channel type renders it. Built from verdict words and counts only:
    no token, key or channel secret can be in it (and the words are redacted again)."""
    started, ended = notifyrules.KIND_TITLES[seen.kind]
    pool = seen.pool
    if seen.account is not None:
        subject = f"Account {seen.account.label} in pool {pool.name}"
        url = _site(reverse("account", args=[seen.account.pk]))
    else:
        subject = f"Pool {pool.name}"
        url = _site(reverse("pool", args=[pool.slug]))
    title = f"{subject}: {started if direction == Direction.STARTED else ended}"
    reason = redact(seen.reason) if direction == Direction.STARTED else ""
    return {
        "type": "accounts_pool.notification",
        "kind": seen.kind.value,
        "state": direction.value,
        "title": title,
        "reason": reason,
        "until": _iso(seen.until) if direction == Direction.STARTED else None,
        "at": _iso(now),
        "url": url,
        "team": {"slug": pool.team.slug, "name": pool.team.name},
        "pool": {
            "slug": pool.slug,
            "name": pool.name,
            "usable": seen.usable,
            "total": seen.total,
            "minimum_usable": pool.minimum_usable,
        },
        "account": ({"id": seen.account.pk, "label": seen.account.label} if seen.account else None),
    } | (
        {"runs_dry_at": _iso(seen.runs_dry_at) if direction == Direction.STARTED else None}
        if seen.kind == Kind.POOL_FORECAST_DRY
        else {}
    )


def _team_evaluate(team: Team, now: datetime, *, queued: bool) -> list[Delivery]:
    channels = [c for c in Channel.objects.filter(team=team, enabled=True) if c.kinds]
    known = {s.key: s for s in NotificationSubject.objects.filter(pool__team=team)}
    created: list[Delivery] = []
    pools = selectors.team_verdicts(team, now=now)
    # the forecast reads the account-wide windows and their last hour (two queries in all)
    prefetch_related_objects([r.account for _, rows in pools for r in rows], "quota_windows")
    forecasts = usage_selectors.pool_forecasts([rows for _, rows in pools], now)
    for (pool, rows), forecast in zip(pools, forecasts, strict=True):
        warned = known.get(pool_key(pool, Kind.POOL_FORECAST_DRY))
        observations = _observations(
            pool, rows, now, forecast=forecast, warned=bool(warned and warned.announced)
        )
        for seen in observations:
            subject = known.get(seen.key)
            if subject is None and not seen.holds:
                continue  # never seen holding: nothing to remember
            before = subject.memory() if subject else notifyrules.Memory()
            step = notifyrules.notification_step(before, holds=seen.holds, kind=seen.kind, now=now)
            if step.memory != before:
                _remember(subject, seen, step.memory)
            if step.send is not None:
                payload = message_payload(seen, step.send, now)
                these = [
                    Delivery.objects.create(
                        channel=channel,
                        kind=seen.kind.value,
                        direction=step.send.value,
                        payload=payload,
                        created_at=now,
                        next_attempt_at=now,
                        queued_until=now + CLAIM if queued else None,
                    )
                    for channel in channels
                    if seen.kind.value in channel.kinds
                ]
                created += these
                logger.info("notify %s %s: %d channel(s)", seen.key, step.send, len(these))
    return created


def _remember(
    subject: NotificationSubject | None, seen: Observation, memory: notifyrules.Memory
) -> None:
    values = {
        "observed": memory.observed,
        "observed_since": memory.observed_since,
        "announced": memory.announced,
        "started_sent_at": memory.started_sent_at,
        "ended_sent_at": memory.ended_sent_at,
    }
    if subject is None:
        NotificationSubject.objects.create(
            key=seen.key, pool=seen.pool, account=seen.account, kind=seen.kind.value, **values
        )
    else:
        NotificationSubject.objects.filter(pk=subject.pk).update(**values)


def _enqueue_all(enqueue: Callable[[str], object], ids: list[str]) -> Callable[[], None]:
    def run() -> None:
        for delivery_id in ids:
            enqueue(delivery_id)

    return run


def notifications_evaluate(
    *, now: datetime | None = None, enqueue: Callable[[str], object] | None = None
) -> int:
    """Evaluate every team that has an enabled channel; returns how many messages were queued.
    Each team's evaluation holds its row locked, so two evaluations never announce one change
    twice; the messages are queued (`enqueue` with the delivery id) once it commits."""
    now = now or timezone.now()
    count = 0
    for team_id in (
        Team.objects.filter(channels__enabled=True).values_list("pk", flat=True).distinct()
    ):
        with transaction.atomic():
            team = Team.objects.select_for_update().filter(pk=team_id).first()
            if team is None:
                continue
            created = _team_evaluate(team, now, queued=enqueue is not None)
            if enqueue is not None:
                transaction.on_commit(_enqueue_all(enqueue, [str(d.pk) for d in created]))
        count += len(created)
    return count


# --- Delivery -------------------------------------------------------------------------------------


class DeliveryOutcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"  # will be tried again
    GAVE_UP = "gave_up"
    SKIPPED = "skipped"  # not due, taken by another worker, or already done


def deliveries_due(*, now: datetime, limit: int = 500) -> list[UUID]:
    """Pending deliveries whose next attempt is due, that no worker holds and no queued task
    waits for; each is marked as queued (for CLAIM), so a backlog is not queued again at every
    tick. A task lost after that is queued again once its mark lapses."""
    with transaction.atomic():
        due = (
            Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
            .filter(Q(queued_until__isnull=True) | Q(queued_until__lte=now))
            .order_by("next_attempt_at")
        )
        ids = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit])
        Delivery.objects.filter(pk__in=ids).update(queued_until=now + CLAIM)
    return ids


def deliveries_prune(*, now: datetime, older_than: timedelta) -> int:
    """Delete finished deliveries (with their log) older than the retention."""
    deleted, _ = (
        Delivery.objects.filter(created_at__lt=now - older_than)
        .exclude(status=Delivery.Status.PENDING)
        .delete()
    )
    return int(deleted)


def _claim(delivery_id: UUID | str, now: datetime) -> bool:
    return bool(
        Delivery.objects.filter(
            pk=delivery_id, status=Delivery.Status.PENDING, next_attempt_at__lte=now
        )
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
        .update(claimed_until=now + CLAIM)
    )


def render_text(payload: dict[str, Any]) -> str:
    lines = [payload["title"] + "."]
    if payload.get("reason"):
        lines.append(payload["reason"])
    if payload.get("until"):
        lines.append(f"Until: {payload['until']}")
    pool = payload.get("pool") or {}
    if "usable" in pool:
        lines.append(
            f"Pool {pool['name']}: {pool['usable']} of {pool['total']} accounts usable"
            + (f" (minimum {pool['minimum_usable']})." if pool.get("minimum_usable") else ".")
        )
    lines.append(payload["url"])
    return "\n".join(lines)


def _send(channel: Channel, delivery: Delivery) -> outside.Sent:
    payload = {"id": str(delivery.pk), **delivery.payload}
    if channel.type == Channel.Type.EMAIL:
        return outside.send_email(
            to=notifyrules.split_addresses(channel.target),
            subject=" ".join(f"[accounts-pool] {payload['title']}".split()),  # one line
            text=render_text(payload),
        )
    problem = notifyrules.url_problem(channel.target) or notifyrules.target_problem(
        channel.target,
        outside.resolve(channel.target),
        allow_private=settings.ACCOUNTS_POOL_NOTIFY_ALLOW_PRIVATE_TARGETS,
    )
    if problem:  # checked again at each send: a host may resolve elsewhere since it was saved
        raise outside.SendFailed(problem)
    if channel.type == Channel.Type.SLACK:
        # Slack's incoming webhooks take {"text": ...} with <url|label> links.
        text = render_text(payload).replace(payload["url"], f"<{payload['url']}|Open>")
        return outside.post(channel.target, json.dumps({"text": text}).encode(), {})
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    stamp = int(time.time())  # the real send time, whatever clock scheduled it
    headers = {
        notifyrules.TIMESTAMP_HEADER: str(stamp),
        notifyrules.SIGNATURE_HEADER: notifyrules.signature(channel.signing_secret, stamp, body),
    }
    return outside.post(channel.target, body, headers)


def delivery_attempt(*, delivery_id: UUID | str, now: datetime | None = None) -> DeliveryOutcome:
    """Try to deliver one message, if it is due and no other worker holds it; log the attempt,
    and schedule the next (exponential, within 24 hours of the transition) or give up."""
    now = now or timezone.now()
    if not _claim(delivery_id, now):
        return DeliveryOutcome.SKIPPED
    delivery = Delivery.objects.get(pk=delivery_id)
    status_code: int | None
    try:
        sent = _send(Channel.objects.get(pk=delivery.channel_id), delivery)
        status_code, error = sent.status_code, ""
    except outside.SendFailed as failed:
        status_code, error = failed.status_code, failed.message
    except Exception as exc:  # a bug or a bad key must not leave it unlogged, retried forever
        # Only the type: an exception's text may quote the target.
        logger.error("delivery=%s failed inside: %s", delivery.pk, type(exc).__name__)
        status_code, error = None, f"internal error ({type(exc).__name__})"
    attempt = delivery.attempts + 1
    base = timedelta(seconds=settings.ACCOUNTS_POOL_NOTIFY_RETRY_BASE_SECONDS)
    retry_at = (
        None
        if delivery.kind == notifyrules.TEST_KIND  # a test is tried once, while the lead watches
        else notifyrules.next_attempt_at(
            created_at=delivery.created_at, attempts=attempt, now=now, base=base
        )
    )
    if not error:
        outcome, status = DeliveryOutcome.DELIVERED, Delivery.Status.DELIVERED
    elif retry_at is not None:
        outcome, status = DeliveryOutcome.FAILED, Delivery.Status.PENDING
    else:
        outcome, status = DeliveryOutcome.GAVE_UP, Delivery.Status.GAVE_UP
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            delivery=delivery,
            channel_id=delivery.channel_id,
            at=now,
            attempt=attempt,
            status_code=status_code,
            ok=not error,
            error=redact(error),
        )
        Delivery.objects.filter(pk=delivery.pk).update(
            attempts=attempt,
            status=status,
            next_attempt_at=retry_at if status == Delivery.Status.PENDING else None,
            delivered_at=now if outcome == DeliveryOutcome.DELIVERED else None,
            claimed_until=None,
            queued_until=None,
        )
    logger.info(
        "delivery=%s channel=%s kind=%s attempt=%d outcome=%s status=%s",
        delivery.pk,
        delivery.channel_id,
        delivery.kind,
        attempt,
        outcome,
        status_code,
    )
    return outcome


DIGEST_KIND = "digest"


def digest_payload(team: Team, now: datetime) -> dict[str, Any]:
    """Every pool of the team with its usable count and each excluded account's first reason."""
    lines = []
    for pool, rows in selectors.team_verdicts(team, now=now):
        usable, total = notifyrules.usable_count(r.verdict.status for r in rows)
        minimum = f", minimum {pool.minimum_usable}" if pool.minimum_usable else ""
        lines.append(f"{pool.name}: {usable} of {total} accounts usable{minimum}.")
        for row in rows:
            reason = row.verdict.first_reason
            if row.verdict.status == Status.EXCLUDED and reason is not None:
                lines.append(f"  - {row.account.label}: {redact(reason.message)}")
    return {
        "type": "accounts_pool.notification",
        "kind": DIGEST_KIND,
        "state": "daily",
        "title": f"Daily summary of team {team.name}",
        "reason": "\n".join(lines) or "No pools.",
        "until": None,
        "at": _iso(now),
        "url": _site(reverse("team", args=[team.slug])),
        "team": {"slug": team.slug, "name": team.name},
        "pool": None,
        "account": None,
    }


def digests_queue(
    *, now: datetime | None = None, enqueue: Callable[[str], object] | None = None
) -> int:
    """Queue today's summary for every enabled email channel that asked for one, once a day
    (running it twice the same UTC day queues nothing more)."""
    now = now or timezone.now()
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    channels = Channel.objects.filter(
        enabled=True, daily_digest=True, type=Channel.Type.EMAIL
    ).select_related("team")
    created = []
    with transaction.atomic():
        for channel in channels.select_for_update(of=("self",)):
            if Delivery.objects.filter(
                channel=channel, kind=DIGEST_KIND, created_at__gte=day_start
            ).exists():
                continue
            created.append(
                Delivery.objects.create(
                    channel=channel,
                    kind=DIGEST_KIND,
                    payload=digest_payload(channel.team, now),
                    created_at=now,
                    next_attempt_at=now,
                    queued_until=now + CLAIM if enqueue is not None else None,
                )
            )
        if enqueue is not None:
            transaction.on_commit(_enqueue_all(enqueue, [str(d.pk) for d in created]))
    return len(created)


@dataclass(frozen=True)
class TestResult:
    outcome: DeliveryOutcome
    attempt: DeliveryAttempt | None


def channel_send_test(*, channel: Channel, now: datetime | None = None) -> TestResult:
    """Send a test message now, once, and say how it went (it is in the log like any other)."""
    now = now or timezone.now()
    team = channel.team
    delivery = Delivery.objects.create(
        channel=channel,
        kind=notifyrules.TEST_KIND,
        payload={
            "type": "accounts_pool.notification",
            "kind": notifyrules.TEST_KIND,
            "state": "test",
            "title": f"Test message for channel {channel.name} of team {team.name}",
            "reason": "A lead asked for a test message.",
            "until": None,
            "at": _iso(now),
            "url": _site(reverse("channels", args=[team.slug])),
            "team": {"slug": team.slug, "name": team.name},
            "pool": None,
            "account": None,
        },
        created_at=now,
        next_attempt_at=now,
    )
    outcome = delivery_attempt(delivery_id=delivery.pk, now=now)
    return TestResult(outcome, DeliveryAttempt.objects.filter(delivery=delivery).first())

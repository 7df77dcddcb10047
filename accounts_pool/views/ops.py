"""For operators and monitors: /healthz and /metrics."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from .. import metrics
from ..services.credentials import unreadable_count


def _database_ok() -> str | None:
    """A new connection and a SELECT 1 (run in a probe thread: its own connection, closed
    after, so a kept one that hangs cannot hold /healthz)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return f"database: {type(exc).__name__}"
    finally:
        connection.close()
    return None


def _broker_ok() -> str | None:
    from config.celery import app

    try:
        with app.connection_for_write(url=settings.CELERY_BROKER_URL) as conn:
            # No retry: a refused broker is named at once, not after the retry interval.
            conn.ensure_connection(max_retries=0, timeout=settings.HEALTHZ_BROKER_TIMEOUT)
    except Exception as exc:  # kombu raises transport-specific errors
        return f"broker: {type(exc).__name__}"
    return None


# Probes run side by side, each waited for HEALTHZ_TIMEOUT at most: /healthz answers in about
# that long whatever is down or hanging. A probe stuck past it ends by its own timeouts
# (DB_CONNECT_TIMEOUT, the broker's), so the few threads are never all held for long.
_PROBES = ThreadPoolExecutor(max_workers=8, thread_name_prefix="healthz")


def _probed(checks: dict[str, Callable[[], str | None]]) -> dict[str, str]:
    """Each part's problem, run at once; a part that does not answer in time is named so."""
    futures = {part: _PROBES.submit(check) for part, check in checks.items()}
    done, _ = wait(futures.values(), timeout=settings.HEALTHZ_TIMEOUT)
    problems = {}
    for part, future in futures.items():
        if future not in done:
            problems[part] = f"{part}: no answer within {settings.HEALTHZ_TIMEOUT:g} s"
        elif (problem := future.result()) is not None:
            problems[part] = problem
    return problems


@require_GET
def livez(request: HttpRequest) -> HttpResponse:
    """The process answers: no database, no broker (for liveness probes)."""
    return HttpResponse("ok\n", content_type="text/plain")


def _secrets() -> str:
    """Accounts whose stored secrets the configured keys cannot decrypt (marked by whoever
    met them, and by the daily check)."""
    try:
        unreadable = unreadable_count()
    except DatabaseError:
        return "unknown"
    return f"{unreadable} account(s) unreadable with the configured keys" if unreadable else "ok"


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the broker answer; 503 naming the part that does not.
    Unreadable secrets make it "degraded" (still 200: the rest of the pool serves)."""
    failures = _probed({"database": _database_ok, "broker": _broker_ok})
    secrets_state = _secrets() if "database" not in failures else "unknown"
    status = "unavailable" if failures else "ok" if secrets_state == "ok" else "degraded"
    body = {
        "status": status,
        "database": failures.get("database", "ok"),
        "broker": failures.get("broker", "ok"),
        "secrets": secrets_state,
    }
    return JsonResponse(body, status=503 if failures else 200)


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        return secrets.compare_digest(header.removeprefix("Bearer "), token)
    try:
        client = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(
        client in ipaddress.ip_network(network, strict=False)
        for network in settings.METRICS_ALLOWED_NETWORKS
    )


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition, for a Bearer METRICS_TOKEN or a client in the allowed networks."""
    if not _allowed(request):
        return HttpResponse("Forbidden.\n", status=403, content_type="text/plain")
    return HttpResponse(
        metrics.render(timezone.now()), content_type="text/plain; version=0.0.4; charset=utf-8"
    )

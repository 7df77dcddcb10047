"""The relay (DESIGN.md 4.4): Claude Code, the Anthropic SDKs and curl use a pooled account by
setting ANTHROPIC_BASE_URL=<site>/relay/anthropic and their pool's consumer key.

Async end to end: the body is read once (so it can be replayed to another account), the
answer streamed chunk by chunk, and a tool that goes away cancels the upstream request. Which
account serves, and what an answer does to it, is the services' business (services/relay.py);
this module only moves bytes and decides, before the tool sees any, whether to fail over.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from .. import state
from ..models import ConsumerKey
from ..providers import messages
from ..services import limits, relay
from ..services.checkout import NoUsableAccount, UnknownKey
from ..services.usage import usage_record
from ..tasks import enqueue_quota_check
from ..usage_meter import UsageMeter

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def _db(function: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Database work runs on worker threads (each with its own connection), not on one shared
    thread: a relay process serves many requests at once."""
    return sync_to_async(_reconnecting(function), thread_sensitive=False)


def _reconnecting(function: Callable[P, R]) -> Callable[P, R]:
    """A worker thread's connection outlives every request (no request cycle closes it): when
    the database dropped it (a restart, an idle cut), it fails at its first statement, before
    anything was written. Then it is replaced and the work done once more on a new one."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except (InterfaceError, OperationalError):
            if connection.in_atomic_block or connection.is_usable():
                raise  # the database answered: an error of this work, not a lost connection
            connection.close()
            return function(*args, **kwargs)

    return run


FAILOVERS = {
    state.RelayVerdict.RATE_LIMITED: relay.Failover.RATE_LIMITED,
    state.RelayVerdict.TOKEN_REJECTED: relay.Failover.TOKEN_REJECTED,
    state.RelayVerdict.POLICY_BLOCKED: relay.Failover.POLICY_BLOCKED,
}


def _error(status: int, kind: str, message: str, **headers: str) -> JsonResponse:
    """An answer in the Messages API's own error shape, so every tool prints the message."""
    response = JsonResponse({"type": "error", "error": {"type": kind, "message": message}})
    response.status_code = status
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _credential(request: HttpRequest) -> str:
    """The consumer key: `Authorization: Bearer <key>` (ANTHROPIC_AUTH_TOKEN) or `x-api-key`
    (ANTHROPIC_API_KEY)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key", "").strip()


def _model_and_session(request: HttpRequest, body: bytes) -> tuple[str | None, str]:
    """The request's model (for per-model windows) and its session (for stickiness): Claude
    Code's session header, else the body's metadata.user_id."""
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's stack
        document = None
    document = document if isinstance(document, dict) else {}
    model = document.get("model")
    metadata = document.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    session = request.headers.get("x-claude-code-session-id") or (
        user_id if isinstance(user_id, str) else ""
    )
    return (model if isinstance(model, str) and model else None), session[:200]


def _too_large(request: HttpRequest) -> bool:
    declared = request.headers.get("content-length", "")
    if not (declared.isascii() and declared.isdigit()):
        return False
    # A length with more digits than the limit is over it, without int() refusing 4,300+ digits.
    limit = str(settings.RELAY_MAX_BODY_BYTES)
    return len(declared.lstrip("0")) > len(limit) or int(declared) > settings.RELAY_MAX_BODY_BYTES


@dataclass
class Metered:
    """What a relayed answer is counted against, and what it holds until it ends."""

    key: ConsumerKey
    model: str | None
    started: float  # time.monotonic() at the request's start
    admission: limits.Admission
    account_id: int = 0
    counts: bool = True  # /v1/messages answers carry usage; count_tokens ones do not

    async def end(self, meter: UsageMeter | None, status: int) -> None:
        """Count the request (in memory) and free what it held: once, however it ended."""
        if meter is not None and self.account_id:
            tokens = meter.finish()
            now = timezone.now()
            usage_record(
                pool_id=self.key.pool_id,
                key_id=self.key.pk,
                account_id=self.account_id,
                model=self.model,
                tokens=tokens,
                status=status,
                duration_ms=int((time.monotonic() - self.started) * 1000),
                now=now,
            )
            if self.key.limit_tokens_per_5h is not None:
                await _db(limits.limits_count_tokens)(key=self.key, tokens=tokens.total, now=now)
        if self.admission.slot is not None:
            await _db(limits.limits_release)(self.admission)


async def _relayed(
    answer: messages.Answer, head: bytes, chunks: AsyncIterator[bytes], metered: Metered
) -> AsyncIterator[bytes]:
    """The answer as it arrives, its usage read on the way (the bytes pass untouched); however
    it ends (done, the tool gone), the upstream closes and the request is counted."""
    meter = UsageMeter(answer.headers.get("content-type", "")) if metered.counts else None
    try:
        if head:
            if meter is not None:
                meter.feed(head)
            yield head
        async for chunk in chunks:
            if meter is not None:
                meter.feed(chunk)
            yield chunk
    finally:
        try:
            await answer.aclose()
        finally:
            await metered.end(meter, answer.status_code)


def _pass_through(
    answer: messages.Answer, head: bytes, chunks: AsyncIterator[bytes], metered: Metered
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        _relayed(answer, head, chunks, metered), status=answer.status_code
    )
    for name, value in messages.returned_headers(answer.headers):
        response[name] = value
    return response


async def _relay(request: HttpRequest, path: str) -> HttpResponse | StreamingHttpResponse:
    started = time.monotonic()
    if request.method != "POST":
        return _error(404, "not_found_error", "accounts-pool relay: no such endpoint.")
    if _too_large(request):
        return _error(413, "request_too_large", "accounts-pool relay: the body is too large.")
    body = request.read(settings.RELAY_MAX_BODY_BYTES + 1)
    if len(body) > settings.RELAY_MAX_BODY_BYTES:
        return _error(413, "request_too_large", "accounts-pool relay: the body is too large.")
    key = await _db(relay.relay_key)(_credential(request))
    if key is None:
        return _error(401, "authentication_error", "accounts-pool relay: invalid consumer key.")
    model, session = _model_and_session(request, body)
    admission = limits.Admission()
    if key.limits.any:
        admitted = await _db(limits.limits_admit)(
            key=key, model=model, now=timezone.now(), concurrent=True
        )
        if isinstance(admitted, limits.Refusal):
            return _error(
                429, "rate_limit_error", admitted.message, retry_after=str(admitted.retry_after)
            )
        admission = admitted
    metered = Metered(key, model, started, admission, counts=path == "/v1/messages")
    try:
        answer = await _route(request, key, path, body, model, session, metered)
    except BaseException:
        await metered.end(None, 0)
        raise
    if not isinstance(answer, StreamingHttpResponse):
        await metered.end(None, answer.status_code)  # no account's answer: nothing to count
    return answer


async def _route(
    request: HttpRequest,
    key: ConsumerKey,
    path: str,
    body: bytes,
    model: str | None,
    session: str,
    metered: Metered,
) -> HttpResponse | StreamingHttpResponse:
    query = request.META.get("QUERY_STRING", "")
    tool_headers = dict(request.headers)
    tried: set[int] = set()
    while len(tried) < state.RELAY_MAX_ACCOUNTS:
        try:
            routed = await _db(relay.relay_route)(
                key=key, session=session, model=model, exclude=frozenset(tried)
            )
        except NoUsableAccount as exc:
            return await _nothing_routable(exc, key, model)
        except UnknownKey:  # revoked since this request began: checkout reads it each time
            return _error(401, "authentication_error", "accounts-pool relay: invalid consumer key.")
        tried.add(routed.account_id)
        answer = await _answer_from(key, routed, path, query, tool_headers, body, metered)
        if answer is not None:
            return answer
    return _error(
        429,
        "rate_limit_error",
        f"accounts-pool: {state.RELAY_MAX_ACCOUNTS} accounts of pool '{key.pool.slug}' "
        "refused this request; try again shortly.",
        retry_after="10",
    )


async def _answer_from(
    key: ConsumerKey,
    routed: relay.Routed,
    path: str,
    query: str,
    tool_headers: dict[str, str],
    body: bytes,
    metered: Metered,
) -> HttpResponse | StreamingHttpResponse | None:
    """Send the request to one account (refreshing it once on a 401); its answer for the
    tool, or None when the relay leaves this account for the next one."""
    refreshed = routed.token_from_401
    while True:
        headers = messages.forwarded_headers(tool_headers, routed.access_token)
        try:
            answer = await messages.open_answer(path=path, query=query, headers=headers, body=body)
        except messages.UpstreamUnreachable as exc:
            logger.warning("relay: the Messages API did not answer (%s)", exc)
            return _error(502, "api_error", "accounts-pool relay: the Messages API did not answer.")
        chunks = answer.aiter_raw()
        peeked = await messages.peek(answer, chunks)
        if relay.harvest_due(routed.account_id):
            await _db(relay.relay_harvest)(account_id=routed.account_id, headers=answer.headers)
        verdict = state.relay_verdict(
            status=answer.status_code,
            first_error_type=peeked.error_type,
            message=peeked.message,
            refreshed=refreshed,
        )
        if verdict == state.RelayVerdict.PASS:
            metered.account_id = routed.account_id
            return _pass_through(answer, peeked.head, chunks, metered)
        await answer.aclose()
        if verdict == state.RelayVerdict.REFRESH_AND_RETRY:
            fresh = await _db(relay.relay_refresh)(key=key, routed=routed)
            if fresh is not None:
                routed, refreshed = fresh, True
                continue
            verdict = state.RelayVerdict.TOKEN_REJECTED
        queue_check = await _db(relay.relay_failover)(
            key=key,
            routed=routed,
            failover=FAILOVERS[verdict],
            status=answer.status_code,
            headers=answer.headers,
            message=peeked.message,
        )
        if queue_check:
            await _db(enqueue_quota_check)(routed.account_id, force=True)
        return None


async def _nothing_routable(
    error: NoUsableAccount, key: ConsumerKey, model: str | None
) -> JsonResponse:
    said = relay.nothing_routable(error, pool_slug=key.pool.slug, model=model, now=timezone.now())
    return _error(429, "rate_limit_error", said.message, retry_after=str(said.retry_after))


@csrf_exempt
async def messages_create(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """POST /relay/anthropic/v1/messages (JSON or a stream)."""
    return await _relay(request, "/v1/messages")


@csrf_exempt
async def count_tokens(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """POST /relay/anthropic/v1/messages/count_tokens."""
    return await _relay(request, "/v1/messages/count_tokens")


@csrf_exempt
async def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return _error(404, "not_found_error", "accounts-pool relay: no such endpoint.")

"""The relay (DESIGN.md 4.4), apart from any web framework: a tool's request in, the answer it
gets out. Two front ends serve it: the relay process's plain ASGI app (relay_asgi.py) and the
URLconf's async view (views/relay.py, for `manage.py runserver`).

Async end to end: the body is read once by the front end (so it can be replayed to another
account), the answer streamed chunk by chunk. Which account serves, and what an answer does to
it, is the services' business (services/relay.py); this module moves bytes and decides, before
the tool sees any, whether to fail over.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from . import outage, state
from .models import ConsumerKey
from .providers import messages
from .services import limits, relay
from .services.checkout import UnknownKey
from .services.usage import usage_record
from .tasks import enqueue_quota_check
from .usage_meter import UsageMeter

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

PREFIX = "/relay/anthropic"
ENDPOINTS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
JSON_HEADERS = (("content-type", "application/json"),)


@dataclass(frozen=True)
class Asked:
    """A tool's request as a front end read it."""

    method: str
    endpoint: str  # the path after PREFIX
    query: str
    headers: Mapping[str, str] = field(repr=False)  # lower-case names
    body: bytes = field(repr=False)  # at most RELAY_MAX_BODY_BYTES + 1 bytes


@dataclass
class Answer:
    """What the tool gets: a status and headers, then `body`, or `chunks` as they arrive (the
    front end must close `chunks` if it stops reading early)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    chunks: AsyncGenerator[bytes] | None = None


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


def error(status: int, kind: str, message: str, retry_after: int | None = None) -> Answer:
    """An answer in the Messages API's own error shape, so every tool prints the message."""
    document = {"type": "error", "error": {"type": kind, "message": message}}
    headers = list(JSON_HEADERS)
    if retry_after is not None:
        headers.append(("retry-after", str(retry_after)))
    return Answer(status, headers, json.dumps(document).encode())


NOT_FOUND = "accounts-pool relay: no such endpoint."
TOO_LARGE = "accounts-pool relay: the body is too large."
BAD_KEY = "accounts-pool relay: invalid consumer key."
INTERNAL = "accounts-pool relay: internal error; the request was not completed."


def _credential(headers: Mapping[str, str]) -> str:
    """The consumer key: `Authorization: Bearer <key>` (ANTHROPIC_AUTH_TOKEN) or `x-api-key`
    (ANTHROPIC_API_KEY)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key", "").strip()


def _model_and_session(headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
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
    session = headers.get("x-claude-code-session-id") or (
        user_id if isinstance(user_id, str) else ""
    )
    return (model if isinstance(model, str) and model else None), session[:200]


def declared_too_large(headers: Mapping[str, str]) -> bool:
    declared = headers.get("content-length", "")
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
        tokens = 0
        now = timezone.now()
        if meter is not None and self.account_id:
            counted = meter.finish()
            tokens = counted.total
            usage_record(
                pool_id=self.key.pool_id,
                key_id=self.key.pk,
                account_id=self.account_id,
                model=self.model,
                tokens=counted,
                status=status,
                duration_ms=int((time.monotonic() - self.started) * 1000),
                now=now,
            )
        if relay.relay_end_due(self.key, self.admission):
            await _db(relay.relay_end)(
                key=self.key, admission=self.admission, tokens=tokens, now=now
            )


async def _relayed(
    answer: messages.Answer, head: bytes, chunks: AsyncIterator[bytes], metered: Metered
) -> AsyncGenerator[bytes]:
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


async def exchange(asked: Asked) -> Answer:
    """The answer a tool gets for its request; 503 with Retry-After when the database does not
    answer (outage.py), instead of a 500 after a hang."""
    try:
        return await _exchange(asked)
    except outage.UNAVAILABLE as exc:
        logger.warning("relay: database unavailable (%s)", type(exc).__name__)
        message = f"accounts-pool: {outage.MESSAGE}"
        return error(503, "api_error", message, settings.DB_UNAVAILABLE_RETRY_AFTER)


async def _exchange(asked: Asked) -> Answer:
    started = time.monotonic()
    if asked.method != "POST" or asked.endpoint not in ENDPOINTS:
        return error(404, "not_found_error", NOT_FOUND)
    if declared_too_large(asked.headers) or len(asked.body) > settings.RELAY_MAX_BODY_BYTES:
        return error(413, "request_too_large", TOO_LARGE)
    model, session = _model_and_session(asked.headers, asked.body)
    try:
        begun = await _started(secret=_credential(asked.headers), session=session, model=model)
    except UnknownKey:
        return error(401, "authentication_error", BAD_KEY)
    except limits.KeyLimitExceeded as exc:
        return error(429, "rate_limit_error", exc.message, exc.retry_after)
    except relay.NothingToRoute as exc:
        return error(429, "rate_limit_error", exc.said.message, exc.said.retry_after)
    metered = Metered(
        begun.key, model, started, begun.admission, counts=asked.endpoint == "/v1/messages"
    )
    try:
        answer = await _route(asked, begun, session, model, metered)
    except BaseException:
        await metered.end(None, 0)
        raise
    if answer.chunks is None:
        await metered.end(None, answer.status)  # no account's answer: nothing to count
    return answer


async def _started(*, secret: str, session: str, model: str | None) -> relay.Started:
    """relay_start on a worker thread. A thread cannot be stopped: when the tool hangs up
    meanwhile, the start runs to its end, and then what it let in (a concurrency slot) is
    given back at once instead of being held until it expires."""
    start = asyncio.ensure_future(
        _db(relay.relay_start)(secret=secret, session=session, model=model)
    )
    try:
        return await asyncio.shield(start)
    except asyncio.CancelledError:
        start.add_done_callback(_give_back)
        raise


_giving_back: set[asyncio.Task[None]] = set()  # held here until done (the loop keeps none)


def _give_back(start: asyncio.Future[relay.Started]) -> None:
    if start.cancelled() or start.exception() is not None:
        return  # nothing was let in (a refusal, an unknown key, no account)
    begun = start.result()
    if relay.relay_end_due(begun.key, begun.admission):
        ending = _db(relay.relay_end)(
            key=begun.key, admission=begun.admission, tokens=0, now=timezone.now()
        )
        task = asyncio.ensure_future(ending)
        _giving_back.add(task)
        task.add_done_callback(_giving_back.discard)


async def _route(
    asked: Asked, begun: relay.Started, session: str, model: str | None, metered: Metered
) -> Answer:
    key, routed = begun.key, begun.routed
    tried = {routed.account_id}
    while True:
        answer = await _answer_from(asked, key, routed, metered)
        if answer is not None:
            return answer
        if len(tried) >= state.RELAY_MAX_ACCOUNTS:
            break
        try:
            routed = await _db(relay.relay_route)(
                key=key, session=session, model=model, exclude=frozenset(tried)
            )
        except relay.NothingToRoute as exc:
            return error(429, "rate_limit_error", exc.said.message, exc.said.retry_after)
        except UnknownKey:  # revoked since this request began: checkout reads it each time
            return error(401, "authentication_error", BAD_KEY)
        tried.add(routed.account_id)
    return error(
        429,
        "rate_limit_error",
        f"accounts-pool: {state.RELAY_MAX_ACCOUNTS} accounts of pool '{key.pool.slug}' "
        "refused this request; try again shortly.",
        retry_after=10,
    )


async def _answer_from(
    asked: Asked, key: ConsumerKey, routed: relay.Routed, metered: Metered
) -> Answer | None:
    """Send the request to one account (refreshing it once on a 401); its answer for the
    tool, or None when the relay leaves this account for the next one."""
    refreshed = routed.token_from_401
    while True:
        headers = messages.forwarded_headers(asked.headers, routed.access_token)
        try:
            answer = await messages.open_answer(
                path=asked.endpoint, query=asked.query, headers=headers, body=asked.body
            )
        except messages.UpstreamUnreachable as exc:
            logger.warning("relay: the Messages API did not answer (%s)", exc)
            return error(502, "api_error", "accounts-pool relay: the Messages API did not answer.")
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
            return Answer(
                answer.status_code,
                messages.returned_headers(answer.headers),
                chunks=_relayed(answer, peeked.head, chunks, metered),
            )
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

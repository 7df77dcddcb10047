"""SimulatedAnthropic: a local stand-in for Anthropic's OAuth token, usage and profile endpoints
and for the Messages API the relay forwards to.

For tests, benchmarks and demos only; the app never defaults to it. Point the app at it with
`sim.env()` (ANTHROPIC_TOKEN_URL, ANTHROPIC_API_URL and friends).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypedDict

from simulator.accounts import SimAccount, new_access_token, new_refresh_token, org_uuid
from simulator.faults import Fault
from simulator.handler import AUTHORIZE_PATH, PROFILE_PATH, TOKEN_PATH, USAGE_PATH, SimServer
from simulator.messages import (
    OAUTH_BETA,
    MessagesRequest,
    betas,
    encode_event,
    input_tokens,
    invalid_request,
    message,
    message_id,
    parse_body,
    ratelimit_headers,
    stream_events,
)
from simulator.oauth import (
    CODE_LIFETIME,
    LOGIN_SCOPES,
    POLICY_MESSAGE,
    REFRESH_SCOPES,
    PendingCode,
    login_page,
    pkce_ok,
    token_answer,
)
from simulator.replies import Reply, StreamReply, error_reply, json_reply, oauth_error

ENDPOINTS = frozenset({"token", "usage", "profile", "authorize", "messages", "count_tokens"})
# The newest Messages requests kept for `messages_requests()` (a benchmark sends many).
RECORDED_REQUESTS = 10_000


class SimStats(TypedDict):
    """Counters since start (or the last `reset_stats`)."""

    token: int  # refresh-grant calls to the token URL (and token calls of no known grant)
    usage: int
    profile: int
    exchange: int  # authorization_code calls to the token URL
    authorize: int
    refreshes: dict[str, int]  # successful refreshes per account uuid
    invalid_grant: int  # answers of 400 invalid_grant
    reused: int  # already-exchanged refresh tokens presented again (the lost-rotation signal)
    faults: int  # injected faults served
    messages: int  # POST /v1/messages
    count_tokens: int  # POST /v1/messages/count_tokens
    disconnects: int  # Messages requests whose client hung up before the answer was complete


@dataclass
class _Injection:
    endpoint: str
    fault: Fault
    remaining: int | None
    account: SimAccount | None


class SimulatedAnthropic:
    """A thread-safe simulated Anthropic OAuth provider on a local port.

    `with SimulatedAnthropic() as sim:` starts and stops it. Accounts come from `add_account`,
    `seed` or a PKCE login (`/oauth/authorize` then an authorization_code exchange).

    Streamed Messages answers have `stream_chunks` text deltas, each sent `chunk_delay` seconds
    after the previous event (both settable while running; an account's own values win).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        *,
        stream_chunks: int = 4,
        chunk_delay: float = 0.0,
    ) -> None:
        self.host = host
        self._port = port
        self._lock = threading.Lock()
        self._latency = float(latency)
        self._stopping = threading.Event()
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None
        self._serial = itertools.count(1)
        self._accounts: dict[str, SimAccount] = {}
        self._by_refresh: dict[str, SimAccount] = {}
        self._used_refresh: dict[str, SimAccount] = {}
        self._access_owner: dict[str, SimAccount] = {}
        self._codes: dict[str, PendingCode] = {}
        self._injections: list[_Injection] = []
        self._counts: Counter[str] = Counter()
        self._refreshes: Counter[str] = Counter()
        self.stream_chunks = stream_chunks
        self.chunk_delay = chunk_delay
        self._requests: deque[MessagesRequest] = deque(maxlen=RECORDED_REQUESTS)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SimulatedAnthropic:
        """Bind and serve in a daemon thread. Returns self."""
        if self._server is not None:
            raise RuntimeError("SimulatedAnthropic is already running")
        self._stopping.clear()
        self._server = SimServer((self.host, self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sim-anthropic-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end held requests (timeout faults, delays) and close connections."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> SimulatedAnthropic:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the requested one before `start`)."""
        if self._server is None:
            return self._port
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """`http://host:port` of the running server."""
        if self._server is None:
            raise RuntimeError("SimulatedAnthropic is not started")
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The settings that point the app at this simulator."""
        base = self.base_url
        return {
            "ANTHROPIC_TOKEN_URL": base + TOKEN_PATH,
            "ANTHROPIC_USAGE_URL": base + USAGE_PATH,
            "ANTHROPIC_PROFILE_URL": base + PROFILE_PATH,
            "ANTHROPIC_AUTHORIZE_URL": base + AUTHORIZE_PATH,
            "ANTHROPIC_API_URL": base,
        }

    @property
    def latency(self) -> float:
        """Seconds added to every request; settable while running."""
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = max(0.0, float(seconds))

    # -- accounts ----------------------------------------------------------------------------

    def add_account(
        self,
        *,
        email: str | None = None,
        organization: str = "Sim Org",
        usage: dict[str, Any] | None = None,
        access_lifetime: int = 28800,
    ) -> SimAccount:
        """A provider-side account with a fresh refresh token and access token."""
        serial = next(self._serial)
        account = SimAccount(
            email=email or f"sim-{serial}@sim.test",
            organization=organization,
            organization_uuid=org_uuid(organization),
            usage=usage,
            access_lifetime=access_lifetime,
        )
        with self._lock:
            self._register(account)
        return account

    def seed(self, n: int, *, prefix: str = "sim") -> list[SimAccount]:
        """`n` accounts at once (emails `{prefix}-{serial}@sim.test`), fast enough for 10,000+."""
        now = time.time()
        org = org_uuid("Sim Org")
        accounts = [
            SimAccount(
                email=f"{prefix}-{next(self._serial)}@sim.test",
                organization="Sim Org",
                organization_uuid=org,
                usage=None,
                access_lifetime=28800,
                now=now,
            )
            for _ in range(n)
        ]
        with self._lock:
            for account in accounts:
                self._register(account)
        return accounts

    def _register(self, account: SimAccount) -> None:
        self._accounts[account.uuid] = account
        self._by_refresh[account.refresh_token] = account
        self._access_owner[account.access_token] = account

    def accounts(self) -> list[SimAccount]:
        """Every account, in creation order."""
        with self._lock:
            return list(self._accounts.values())

    def revoke(self, account: SimAccount) -> None:
        """Revoke the account's grant: refreshes answer invalid_grant, usage/profile 401."""
        account.revoked = True

    def account_for_refresh_token(self, token: str) -> SimAccount | None:
        """The account a refresh token was issued to, current or already used (compare with
        `account.refresh_token` to know which); None for a token never issued."""
        return self.owner_of_refresh_token(token)

    def owner_of_refresh_token(self, token: object) -> SimAccount | None:
        """Like `account_for_refresh_token`, for any value (the handler's lookup)."""
        if not isinstance(token, str):
            return None
        with self._lock:
            return self._by_refresh.get(token) or self._used_refresh.get(token)

    def owner_of_access_token(self, token: str | None) -> SimAccount | None:
        """The account an access token was issued to (current or stale), or None."""
        if token is None:
            return None
        with self._lock:
            return self._access_owner.get(token)

    # -- faults ------------------------------------------------------------------------------

    def inject(
        self,
        endpoint: str,
        fault: Fault,
        *,
        times: int | None = None,
        account: SimAccount | None = None,
    ) -> None:
        """Serve `fault` on `endpoint` ("token", "usage", "profile", "authorize", "messages" or
        "count_tokens"), for requests of `account` only (None: any request), `times` times
        (None: until `clear_faults`).

        The token endpoint finds the account by the refresh token presented (current or used),
        the others by the bearer token (current or stale). The oldest matching injection wins."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {sorted(ENDPOINTS)}, not {endpoint!r}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for until cleared)")
        with self._lock:
            self._injections.append(_Injection(endpoint, fault, times, account))

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self._injections.clear()

    def take_fault(self, endpoint: str, account: SimAccount | None) -> Fault | None:
        """The fault to serve for this request, if any (used by the handler; counts it)."""
        with self._lock:
            for index, injection in enumerate(self._injections):
                if injection.endpoint != endpoint:
                    continue
                if injection.account is not None and injection.account is not account:
                    continue
                if injection.remaining is not None:
                    injection.remaining -= 1
                    if injection.remaining <= 0:
                        del self._injections[index]
                self._counts["faults"] += 1
                return injection.fault
        return None

    @property
    def stopping(self) -> bool:
        """True once `stop` has begun (held requests end early)."""
        return self._stopping.is_set()

    def pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less if the simulator stops meanwhile."""
        if seconds <= 0:
            return
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stopping.wait(left)

    # -- stats -------------------------------------------------------------------------------

    def count(self, name: str) -> None:
        """Add one to a counter (used by the handler)."""
        with self._lock:
            self._counts[name] += 1

    def stats(self) -> SimStats:
        """A snapshot of the counters."""
        with self._lock:
            return SimStats(
                token=self._counts["token"],
                usage=self._counts["usage"],
                profile=self._counts["profile"],
                exchange=self._counts["exchange"],
                authorize=self._counts["authorize"],
                refreshes=dict(self._refreshes),
                invalid_grant=self._counts["invalid_grant"],
                reused=self._counts["reused"],
                faults=self._counts["faults"],
                messages=self._counts["messages"],
                count_tokens=self._counts["count_tokens"],
                disconnects=self._counts["disconnects"],
            )

    def reset_stats(self) -> None:
        """Zero every counter and forget the recorded Messages requests."""
        with self._lock:
            self._counts.clear()
            self._refreshes.clear()
            self._requests.clear()

    def messages_requests(self, *, settle: float = 0.0) -> list[MessagesRequest]:
        """Copies of the recorded Messages requests, oldest first (the newest 10,000; requests
        still being answered have `finished` false). A request is noted finished just after its
        answer's last byte, so a client may read its answer first: `settle` waits up to that
        many seconds for every recorded request to be finished."""
        deadline = time.monotonic() + settle
        while True:
            with self._lock:
                requests = [copy.copy(request) for request in self._requests]
            if all(r.finished for r in requests) or time.monotonic() >= deadline:
                return requests
            time.sleep(0.01)

    def record_messages_request(
        self, *, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> MessagesRequest:
        """Record a request as it arrives (used by the handler)."""
        document = parse_body(body)
        request = MessagesRequest(
            path=path,
            query=query,
            headers=headers,
            body=body,
            body_sha256=hashlib.sha256(body).hexdigest(),
            account=None,
            stream=bool(document and document.get("stream") is True),
            started_at=time.time(),
        )
        with self._lock:
            self._requests.append(request)
        return request

    def finish_messages_request(
        self,
        request: MessagesRequest,
        *,
        account: SimAccount | None,
        status: int,
        events_sent: int,
        disconnected: bool,
    ) -> None:
        """Note how a recorded request ended (used by the handler); counts a disconnect."""
        with self._lock:
            request.account = account
            request.status = status
            request.events_sent = events_sent
            request.disconnected = disconnected
            request.finished = True
            request.finished_at = time.time()
            if disconnected:
                self._counts["disconnects"] += 1

    # -- protocol ----------------------------------------------------------------------------

    def token_reply(self, payload: dict[str, Any] | None) -> Reply:
        """POST /v1/oauth/token."""
        if payload is None:
            return oauth_error("invalid_request", "Request body must be a JSON object")
        grant = payload.get("grant_type")
        if grant == "refresh_token":
            return self._refresh(payload)
        if grant == "authorization_code":
            return self._exchange(payload)
        return oauth_error("unsupported_grant_type", f"Unsupported grant_type: {grant!r}")

    def _invalid_grant(self, description: str) -> Reply:
        self._counts["invalid_grant"] += 1
        return oauth_error("invalid_grant", description)

    def _refresh(self, payload: dict[str, Any]) -> Reply:
        token = payload.get("refresh_token")
        if not isinstance(token, str) or not token:
            return oauth_error("invalid_request", "Missing refresh_token")
        scope = payload.get("scope")
        with self._lock:
            account = self._by_refresh.get(token)
            if account is None:
                if token in self._used_refresh:
                    self._counts["reused"] += 1
                return self._invalid_grant("Refresh token not found or invalid")
            if account.revoked:
                return self._invalid_grant("Refresh token not found or invalid")
            del self._by_refresh[token]
            self._used_refresh[token] = account
            self._rotate(account)
            self._refreshes[account.uuid] += 1
            return token_answer(account, scope if isinstance(scope, str) else REFRESH_SCOPES)

    def _rotate(self, account: SimAccount) -> None:
        account.refresh_token = new_refresh_token()
        account.access_token = new_access_token()
        account.access_expires_at = time.time() + account.access_lifetime
        self._by_refresh[account.refresh_token] = account
        self._access_owner[account.access_token] = account

    def authorize_reply(self, query: dict[str, list[str]]) -> Reply:
        """GET /oauth/authorize: the page that shows `CODE#STATE` to paste back."""

        def arg(name: str, default: str = "") -> str:
            return (query.get(name) or [default])[0]

        state = arg("state")
        code = secrets.token_urlsafe(24)
        pending = PendingCode(
            challenge=arg("code_challenge"),
            method=arg("code_challenge_method", "S256"),
            state=state,
            scope=arg("scope", LOGIN_SCOPES),
            email=arg("login_hint") or None,
            expires_at=time.monotonic() + CODE_LIFETIME,
        )
        with self._lock:
            self._codes[code] = pending
            known = sorted(a.email for a in self._accounts.values())
        # A person chooses whom to log in as: a new account, or one the provider already has
        # (a re-login of an account whose grant was revoked gets new tokens for that account).
        choices = [] if pending.email else known[:50]
        return login_page(code, state, email=pending.email, choices=choices, query=query)

    def _exchange(self, payload: dict[str, Any]) -> Reply:
        code = payload.get("code")
        state = payload.get("state")
        verifier = payload.get("code_verifier")
        if not isinstance(code, str) or not code:
            return oauth_error("invalid_request", "Missing code")
        if "#" in code:
            code, _, pasted_state = code.partition("#")
            state = state if isinstance(state, str) and state else pasted_state
        with self._lock:
            pending = self._codes.pop(code, None)
            if pending is None or pending.expires_at < time.monotonic():
                return self._invalid_grant("Invalid 'code' in request")
            if isinstance(state, str) and state and state != pending.state:
                return self._invalid_grant("Invalid 'state' in request")
            if not pkce_ok(pending, verifier):
                return self._invalid_grant("Invalid 'code_verifier' in request")
        with self._lock:
            existing = next(
                (a for a in self._accounts.values() if pending.email and a.email == pending.email),
                None,
            )
            if existing is not None:  # the same account logs in again: a new grant
                existing.revoked = False
                self._by_refresh.pop(existing.refresh_token, None)
                self._rotate(existing)
                return token_answer(existing, pending.scope)
        account = self.add_account(email=pending.email or f"login-{next(self._serial)}@sim.test")
        with self._lock:
            return token_answer(account, pending.scope)

    def resource_reply(self, endpoint: str, bearer: str | None) -> Reply:
        """GET /api/oauth/usage or /api/oauth/profile."""
        if bearer is None:
            return error_reply(401, "authentication_error", "Missing bearer token")
        with self._lock:
            account = self._access_owner.get(bearer)
            if account is None or account.access_token != bearer or account.revoked:
                return error_reply(401, "authentication_error", "Invalid bearer token")
            if account.access_expired:
                return error_reply(
                    401,
                    "authentication_error",
                    "OAuth token has expired. Please obtain a new token or refresh your "
                    "existing token.",
                )
            if account.policy_blocked:
                return error_reply(403, "permission_error", POLICY_MESSAGE)
            if endpoint == "usage":
                return json_reply(200, account.usage)
            return json_reply(200, account.identity())

    def messages_headers(self, account: SimAccount | None) -> tuple[tuple[str, str], ...]:
        """Headers of every Messages answer: a request id, and the account's rate-limit headers
        when the bearer token names an account."""
        request_id = ("request-id", "req_sim_" + secrets.token_hex(12))
        if account is None:
            return (request_id,)
        return (request_id, *ratelimit_headers(account))

    def messages_reply(
        self,
        endpoint: str,
        *,
        bearer: str | None,
        api_key: str | None,
        beta: str,
        raw: bytes,
    ) -> Reply | StreamReply:
        """POST /v1/messages ("messages") or /v1/messages/count_tokens ("count_tokens"), with
        the OAuth access token of an account and the OAuth beta."""
        with self._lock:
            account = self._access_owner.get(bearer) if bearer is not None else None
            denied = self._oauth_denied(account, bearer, api_key, beta)
            chunks = account.stream_chunks if account and account.stream_chunks else None
            delay = account.chunk_delay if account and account.chunk_delay is not None else None
            chunks = chunks or self.stream_chunks
            delay = self.chunk_delay if delay is None else delay
        headers = self.messages_headers(account)
        if denied is not None:
            return Reply(denied.code, denied.body, denied.content_type, headers)
        assert account is not None
        body = parse_body(raw)
        problem = invalid_request(body, count_only=endpoint == "count_tokens")
        if problem is not None:
            error = error_reply(400, "invalid_request_error", problem)
            return Reply(error.code, error.body, error.content_type, headers)
        assert body is not None
        if endpoint == "count_tokens":
            answer = json_reply(200, {"input_tokens": input_tokens(body)})
            return Reply(answer.code, answer.body, answer.content_type, headers)
        if body.get("stream") is not True:
            answer = json_reply(200, message(body, account, message_id()))
            return Reply(answer.code, answer.body, answer.content_type, headers)
        events = stream_events(body, account, message_id(), max(1, int(chunks)))
        return StreamReply(
            events=tuple(encode_event(kind, data) for kind, data in events),
            delays=tuple(delay if kind == "content_block_delta" else 0.0 for kind, _ in events),
            headers=headers,
        )

    def _oauth_denied(
        self, account: SimAccount | None, bearer: str | None, api_key: str | None, beta: str
    ) -> Reply | None:
        if api_key is not None:
            return error_reply(401, "authentication_error", "invalid x-api-key")
        if bearer is None:
            return error_reply(401, "authentication_error", "Missing bearer token")
        if account is None or account.access_token != bearer or account.revoked:
            return error_reply(401, "authentication_error", "Invalid bearer token")
        if account.access_expired:
            return error_reply(
                401,
                "authentication_error",
                "OAuth token has expired. Please obtain a new token or refresh your "
                "existing token.",
            )
        if OAUTH_BETA not in betas(beta):
            return error_reply(
                401, "authentication_error", "OAuth authentication is currently not supported."
            )
        if account.policy_blocked:
            return error_reply(403, "permission_error", POLICY_MESSAGE)
        return None

    def stream_error_reply(self, fault: Fault, account: SimAccount | None) -> StreamReply:
        """The 200 stream of a `Fault.stream_error`: one `error` event."""
        event = b"event: error\ndata: " + fault.body + b"\n\n"
        return StreamReply(events=(event,), delays=(0.0,), headers=self.messages_headers(account))

"""SimulatedAnthropic: a local stand-in for Anthropic's OAuth token, usage and profile endpoints.

For tests, benchmarks and demos only; the app never defaults to it. Point the app at it with
`sim.env()` (ANTHROPIC_TOKEN_URL and friends).
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypedDict

from simulator.accounts import SimAccount, new_access_token, new_refresh_token, org_uuid
from simulator.faults import Fault
from simulator.handler import AUTHORIZE_PATH, PROFILE_PATH, TOKEN_PATH, USAGE_PATH, SimServer
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
from simulator.replies import Reply, error_reply, json_reply, oauth_error

ENDPOINTS = frozenset({"token", "usage", "profile", "authorize"})


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
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0) -> None:
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
        """Serve `fault` on `endpoint` ("token", "usage", "profile" or "authorize"), for requests
        of `account` only (None: any request), `times` times (None: until `clear_faults`).

        The token endpoint finds the account by the refresh token presented (current or used),
        usage and profile by the bearer token (current or stale). The oldest matching injection
        wins."""
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
            )

    def reset_stats(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._counts.clear()
            self._refreshes.clear()

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
        return login_page(code, state)

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

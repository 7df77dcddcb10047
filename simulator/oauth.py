"""OAuth facts of the simulated provider: scopes, PKCE, the login page, the token answer."""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

from simulator.accounts import SimAccount
from simulator.replies import Reply, json_reply

LOGIN_SCOPES = (
    "org:create_api_key user:profile user:inference user:sessions:claude_code "
    "user:mcp_servers user:file_upload"
)
REFRESH_SCOPES = LOGIN_SCOPES.removeprefix("org:create_api_key ")
POLICY_MESSAGE = "OAuth authentication is currently not allowed for this organization."
CODE_LIFETIME = 600.0


@dataclass(frozen=True)
class PendingCode:
    """A login code shown by the authorize page, waiting for its exchange."""

    challenge: str
    method: str
    state: str
    scope: str
    email: str | None
    expires_at: float


def token_answer(account: SimAccount, scope: str) -> Reply:
    """The 200 answer of a refresh or a code exchange, with the account's current tokens."""
    return json_reply(
        200,
        {
            "token_type": "Bearer",
            "access_token": account.access_token,
            "refresh_token": account.refresh_token,
            "expires_in": account.access_lifetime,
            "scope": scope,
            **account.identity(),
        },
    )


def login_page(
    code: str,
    state: str,
    *,
    email: str | None = None,
    choices: list[str] | None = None,
    query: dict[str, list[str]] | None = None,
) -> Reply:
    """The page the person sees after logging in: the code to paste back, `CODE#STATE`. The
    code logs in `email` when given, else a new account; `choices` lists the accounts the
    provider has, each a link to the same login as that account (`login_hint`)."""
    shown = html.escape(f"{code}#{state}")
    who = f"as {html.escape(email)}" if email else "as a new account"
    links = ""
    for choice in choices or []:
        params = {k: v[0] for k, v in (query or {}).items() if v and k != "login_hint"}
        href = "?" + urlencode({**params, "login_hint": choice})
        links += f'<li><a href="{html.escape(href)}">{html.escape(choice)}</a></li>'
    others = f"<p>Or log in as an account the provider has:</p><ul>{links}</ul>" if links else ""
    page = (
        '<!DOCTYPE html><html lang="en"><head><title>Simulated Anthropic login</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head><body>'
        f"<h1>Simulated Anthropic</h1><p>Logged in {who}. Paste this code into the "
        f'application:</p><code id="code">{shown}</code>{others}</body></html>'
    )
    return Reply(200, page.encode(), "text/html; charset=utf-8")


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a verifier: base64url(sha256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def pkce_ok(pending: PendingCode, verifier: object) -> bool:
    """Does the verifier match the challenge of the authorize request?"""
    if not pending.challenge:
        return True  # the authorize request carried no challenge
    if not isinstance(verifier, str) or not verifier:
        return False
    if pending.method == "plain":
        return secrets.compare_digest(verifier, pending.challenge)
    return secrets.compare_digest(pkce_challenge(verifier), pending.challenge)

"""Bringing accounts in: by tokens (checked with the provider or stored as given), by the PKCE
login, and by file imports. Callers import from here; the modules are by subject."""

from .common import Onboarded, accounts_holding_refresh_tokens, refuse_held_refresh_token
from .imports import ImportEntry, accounts_import, parse_import
from .pkce import (
    LOGIN_TTL,
    LoginStarted,
    oauth_login_complete,
    oauth_login_start,
    parse_pasted_code,
)
from .tokens import (
    account_create_api_key,
    account_create_oauth,
    account_onboard_tokens,
    account_store_tokens,
)

__all__ = [
    "LOGIN_TTL",
    "ImportEntry",
    "LoginStarted",
    "Onboarded",
    "account_create_api_key",
    "account_create_oauth",
    "account_onboard_tokens",
    "account_store_tokens",
    "accounts_holding_refresh_tokens",
    "accounts_import",
    "oauth_login_complete",
    "oauth_login_start",
    "parse_import",
    "parse_pasted_code",
    "refuse_held_refresh_token",
]

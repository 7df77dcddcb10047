"""The providers' HTTP clients keep no cookies.

Each client is shared by every account of the process (a connection pool), so a cookie that one
account's answer sets (a CDN's session cookie, say) would ride along with every other account's
requests and tie the accounts together. Nothing here needs a cookie: every request carries its
own credential."""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy


def no_cookies() -> CookieJar:
    """A cookie jar that accepts none (the standard library's policy, with no allowed domain)."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))

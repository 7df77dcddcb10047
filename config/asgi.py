"""The ASGI entry point (Procfile: relay). Requests under /relay/ go to the relay's own ASGI app
(accounts_pool/relay_asgi.py), without Django's request machinery: a tool is authenticated by its
consumer key, never by a session, and Django's handler would cost every relayed request a thread
and hops to the one thread for sync code (bench/relay.py). Everything else is Django's."""

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

from accounts_pool import relay_asgi  # noqa: E402  (needs Django set up)
from accounts_pool.checks import refuse_flawed_interpreter  # noqa: E402
from accounts_pool.middleware import AsgiBodyLimit  # noqa: E402

RELAY_PREFIX = "/relay/"


async def _route(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"].startswith(RELAY_PREFIX):
        await relay_asgi.application(scope, receive, send)
    else:
        await django_application(scope, receive, send)


# Django's ASGI handler reads the body before any middleware, and the relay's app runs none:
# bound the body and the Cookie header of every request first.
application = AsgiBodyLimit(_route)

# Servers run no system checks: refuse a Python whose cookie parser is quadratic here.
refuse_flawed_interpreter()

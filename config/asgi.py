"""The ASGI entry point (Procfile: relay). Requests under /relay/ go to a handler without the
pages' middleware: a tool is authenticated by its consumer key, never by a session, and each
of those middlewares would cost the relay two hops to Django's one thread for sync code per
request, every relayed request queueing behind the others for it (bench/relay.py)."""

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

from accounts_pool.checks import refuse_flawed_interpreter  # noqa: E402
from accounts_pool.middleware import AsgiBodyLimit  # noqa: E402
from accounts_pool.relay_asgi import RelayHandler  # noqa: E402  (needs Django set up)

relay_application = RelayHandler()
RELAY_PREFIX = "/relay/"


async def _route(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"].startswith(RELAY_PREFIX):
        await relay_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)


# Django's ASGI handler (and the relay's) reads the body before any middleware: bound the body
# and the Cookie header of every request first.
application = AsgiBodyLimit(_route)

# Servers run no system checks: refuse a Python whose cookie parser is quadratic here.
refuse_flawed_interpreter()

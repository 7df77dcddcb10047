"""The relay's front end in the URLconf, so that `manage.py runserver` (and any Django server)
serves it too: a Django request in, relay_exchange's answer out. The relay process serves the
same exchange from a plain ASGI app (relay_asgi.py), without Django's request machinery."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from .. import relay_exchange


@csrf_exempt
async def relay(request: HttpRequest, rest: str = "") -> HttpResponse | StreamingHttpResponse:
    """Any request under /relay/anthropic/: the Messages endpoints answer, others are 404."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    too_large = relay_exchange.declared_too_large(headers)
    asked = relay_exchange.Asked(
        method=request.method or "",
        endpoint="/" + rest,
        query=request.META.get("QUERY_STRING", ""),
        headers=headers,
        body=b"" if too_large else request.read(settings.RELAY_MAX_BODY_BYTES + 1),
    )
    answer = await relay_exchange.exchange(asked)
    response: HttpResponse | StreamingHttpResponse
    if answer.chunks is None:
        response = HttpResponse(answer.body, status=answer.status)
    else:
        response = StreamingHttpResponse(answer.chunks, status=answer.status)
    for name, value in answer.headers:
        response[name] = value
    return response

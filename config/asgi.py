import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

from accounts_pool.middleware import AsgiBodyLimit  # noqa: E402

# Django's ASGI handler buffers the whole body before any middleware: bound it first.
application = AsgiBodyLimit(django_application)

# Servers run no system checks: refuse a Python whose cookie parser is quadratic here.
from accounts_pool.checks import refuse_flawed_interpreter  # noqa: E402

refuse_flawed_interpreter()

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# Servers run no system checks: refuse a Python whose cookie parser is quadratic here.
from accounts_pool.checks import refuse_flawed_interpreter  # noqa: E402

refuse_flawed_interpreter()

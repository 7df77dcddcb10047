import os

from celery import Celery, signals
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("accounts_pool")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def recycle_database_connections(sender: object = None, **_: object) -> None:
    """Around each task, what Django does around each request: close the connections that are
    past DB_CONN_MAX_AGE or broken, keep the others (health-checked before their next use).
    Celery's own Django fixup would close every connection instead (CELERY_DB_REUSE_MAX), and a
    new PostgreSQL backend per task cost more than the task (bench/cycle.py --celery). A task
    run eagerly (`.apply()`) is inside its caller's request or transaction: left alone, as the
    fixup leaves it."""
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    close_old_connections()

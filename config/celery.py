import os

from celery import Celery, signals
from django.conf import settings
from django.db import close_old_connections, transaction

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


@signals.beat_init.connect
def apply_beat_interval(sender: object = None, **_: object) -> None:
    """When ACCOUNTS_POOL_BEAT_SECONDS is set, beat runs both dispatchers and the notification
    tick every that many seconds; unset, the database's schedule (the admin's) is left as it is."""
    if settings.ACCOUNTS_POOL_BEAT_SECONDS is not None:
        beat_interval_set(seconds=settings.ACCOUNTS_POOL_BEAT_SECONDS)


def beat_interval_set(*, seconds: int) -> int:
    """Point the dispatchers' beat entries at an interval of `seconds`, and tell beat.

    Returns how many entries now use it. The shared one-minute interval row is left alone (other
    entries may use it); bulk updates send no signal, hence `update_changed()`."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

    from accounts_pool.tasks import (
        dispatch_quota_checks_task,
        dispatch_token_refresh_task,
        notify_tick,
    )

    names = [dispatch_token_refresh_task.name, dispatch_quota_checks_task.name, notify_tick.name]
    with transaction.atomic():
        every, _ = IntervalSchedule.objects.get_or_create(
            every=seconds, period=IntervalSchedule.SECONDS
        )
        count = PeriodicTask.objects.filter(task__in=names).update(interval=every, crontab=None)
        PeriodicTasks.update_changed()
    return int(count)

"""The refresh cycle's beat entries, in the database so operators see and edit them in the admin.

A data migration rather than code upserted at each beat start: an operator's edit (an interval,
disabling an entry) is never silently overwritten.
"""

from django.db import migrations
from django.utils import timezone

ENTRIES = (
    ("accounts_pool: dispatch token refresh", "accounts_pool.dispatch_token_refresh", "minute"),
    ("accounts_pool: dispatch quota checks", "accounts_pool.dispatch_quota_checks", "minute"),
    ("accounts_pool: prune history", "accounts_pool.prune_events", "day"),
)


def create_entries(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    daily, _ = CrontabSchedule.objects.get_or_create(
        minute="17", hour="3", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    for name, task, cadence in ENTRIES:
        schedule = {"interval": every_minute} if cadence == "minute" else {"crontab": daily}
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": task,
                "enabled": True,
                "description": "Created by accounts_pool.",
                **schedule,
            },
        )
    # Tell a running beat that the schedule changed (bulk writes do not signal it).
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_entries(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, _, _ in ENTRIES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts_pool", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_entries, remove_entries)]

"""Beat's interval: one minute as the migration creates it and the admin shows it, unless
ACCOUNTS_POOL_BEAT_SECONDS says otherwise when beat starts (tests tick every few seconds)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from config.celery import apply_beat_interval, beat_interval_set

pytestmark = pytest.mark.django_db
DISPATCHERS = {
    "accounts_pool.dispatch_token_refresh",
    "accounts_pool.dispatch_quota_checks",
    "accounts_pool.notify_tick",
}


def _schedules() -> dict[str, timedelta]:
    return {
        task.task: task.interval.schedule.run_every
        for task in PeriodicTask.objects.filter(task__in=DISPATCHERS).select_related("interval")
    }


def test_it_dispatches_every_minute_by_default(settings):
    settings.ACCOUNTS_POOL_BEAT_SECONDS = None
    apply_beat_interval()
    assert _schedules() == dict.fromkeys(DISPATCHERS, timedelta(minutes=1))


def test_it_points_both_dispatchers_at_the_configured_seconds_and_tells_beat(settings):
    settings.ACCOUNTS_POOL_BEAT_SECONDS = 3
    before = PeriodicTasks.last_change()
    apply_beat_interval()
    assert _schedules() == dict.fromkeys(DISPATCHERS, timedelta(seconds=3))
    assert PeriodicTasks.last_change() > before  # a running beat reloads its schedule


def test_it_leaves_the_daily_prune_and_the_shared_one_minute_row_alone():
    prune = PeriodicTask.objects.get(task="accounts_pool.prune_events")
    minute = IntervalSchedule.objects.get(every=1, period=IntervalSchedule.MINUTES)
    assert beat_interval_set(seconds=5) == 3
    assert PeriodicTask.objects.get(pk=prune.pk).crontab_id == prune.crontab_id
    assert IntervalSchedule.objects.get(pk=minute.pk).every == 1  # other entries may use it

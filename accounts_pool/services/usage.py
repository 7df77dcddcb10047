"""Usage accounting: each relayed (or reported) request's tokens, status class and duration,
summed in memory per consumer key x account x model x hour and written in batches.

Every few seconds (USAGE_FLUSH_SECONDS) a thread of the process adds what it summed to the
UsageHour rows with F() increments, and once more when the process exits cleanly (SIGTERM:
uvicorn and gunicorn finish their requests, then exit). A process killed
without its exit handlers (SIGKILL, a power cut) loses what it had not yet written: at most one
flush interval of counts. A flush the database refuses keeps its counts for the next one.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import os
import threading
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction
from django.db.models import F

from .. import state
from ..models import UsageHour
from ..usage_meter import Tokens

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    pool_id: int
    key_id: int
    account_id: int
    model: str
    hour: datetime


_lock = threading.Lock()
_pending: dict[Slot, dict[str, int]] = {}
_flusher_pid: int | None = None


def usage_record(
    *,
    pool_id: int,
    key_id: int,
    account_id: int,
    model: str | None,
    tokens: Tokens,
    status: int,
    duration_ms: int,
    now: datetime,
) -> None:
    """Count one request (in memory: no database here; safe from any thread or event loop)."""
    if not settings.USAGE_ACCOUNTING:
        return
    slot = Slot(pool_id, key_id, account_id, (model or "")[:120], state.hour_of(now))
    status_class = f"responses_{status // 100}xx"
    with _lock:
        counts = _pending.setdefault(slot, dict.fromkeys(UsageHour.COUNTERS, 0))
        counts["requests"] += 1
        counts["input_tokens"] += tokens.input_tokens
        counts["output_tokens"] += tokens.output_tokens
        counts["cache_creation_input_tokens"] += tokens.cache_creation_input_tokens
        counts["cache_read_input_tokens"] += tokens.cache_read_input_tokens
        if status_class in counts:
            counts[status_class] += 1
        counts["duration_ms"] += max(0, duration_ms)
    _ensure_flusher()


def pending_requests() -> int:
    """Requests counted in this process and not yet written."""
    with _lock:
        return sum(c["requests"] for c in _pending.values())


def usage_flush() -> int:
    """Write what this process has summed; returns the rows touched. On a database error the
    counts go back into the buffer for the next flush."""
    global _pending
    with _lock:
        taken, _pending = _pending, {}
    if not taken:
        return 0
    try:
        for slot, counts in taken.items():
            _upsert(slot, counts)
    except Exception:
        logger.exception("usage: writing %d rows failed; kept for the next flush", len(taken))
        with _lock:
            for slot, counts in taken.items():
                merged = _pending.setdefault(slot, dict.fromkeys(UsageHour.COUNTERS, 0))
                for name, value in counts.items():
                    merged[name] += value
        return 0
    return len(taken)


def _upsert(slot: Slot, counts: dict[str, int]) -> None:
    increments = {name: F(name) + value for name, value in counts.items() if value}
    rows = UsageHour.objects.filter(
        consumer_key_id=slot.key_id, account_id=slot.account_id, model=slot.model, hour=slot.hour
    )
    if rows.update(**increments):
        return
    try:
        with transaction.atomic():
            UsageHour.objects.create(
                pool_id=slot.pool_id,
                consumer_key_id=slot.key_id,
                account_id=slot.account_id,
                model=slot.model,
                hour=slot.hour,
                **counts,
            )
    except IntegrityError:  # another process created it first: add to theirs
        rows.update(**increments)


def _ensure_flusher() -> None:
    """One flushing thread per process (a forked worker starts its own)."""
    global _flusher_pid
    pid = os.getpid()
    if _flusher_pid == pid:
        return
    with _lock:
        if _flusher_pid == pid:
            return
        _flusher_pid = pid
    threading.Thread(target=_flush_forever, name="usage-flush", daemon=True).start()
    atexit.register(_flush_at_exit)
    # A multiprocessing child (uvicorn --workers) leaves through os._exit, past atexit: its
    # exit finalizers run instead. A second flush finds nothing left to write.
    multiprocessing.util.Finalize(None, _flush_at_exit, exitpriority=10)


_stop = threading.Event()


def _flush_forever() -> None:
    while not _stop.wait(settings.USAGE_FLUSH_SECONDS):
        usage_flush()
        close_old_connections()


def _flush_at_exit() -> None:
    _stop.set()
    try:
        usage_flush()
    except Exception:  # the database may already be gone at exit
        logger.exception("usage: the last flush at exit failed")


def usage_discard() -> int:
    """Drop what this process counted and has not written (tests); returns the requests."""
    global _pending
    with _lock:
        dropped, _pending = _pending, {}
    return sum(c["requests"] for c in dropped.values())

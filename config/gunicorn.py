"""gunicorn settings used by the Procfile: when PROMETHEUS_MULTIPROC_DIR is set, a worker's
metric files are retired when it exits."""

from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]

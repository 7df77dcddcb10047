"""gunicorn settings used by the Procfile (`--config python:config.gunicorn`).

- The access log masks secrets in URLs (invite tokens, login codes and states; see
  accounts_pool/logs.py) in the request line, path, query and referer, and writes one JSON
  object per request when LOG_FORMAT=json (gunicorn's own messages too).
- When PROMETHEUS_MULTIPROC_DIR is set, a worker's metric files are retired when it exits.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from gunicorn.glogging import Logger as _GunicornLogger

from accounts_pool.logs import JsonFormatter, mask_url_secrets

_JSON = os.environ.get("LOG_FORMAT", "text") == "json"


class Logger(_GunicornLogger):  # type: ignore[misc]  # gunicorn ships no types: Any
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if _JSON:
            for log in (self.error_log, self.access_log):
                for handler in log.handlers:
                    handler.setFormatter(JsonFormatter())

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for name in ("r", "U", "f", "{referer}i", "{origin}i"):
            if isinstance(atoms.get(name), str):
                atoms[name] = mask_url_secrets(atoms[name])
        if atoms.get("q"):  # the query alone: its first parameter follows no "?" yet
            atoms["q"] = mask_url_secrets("?" + atoms["q"])[1:]
        # Never a credential header in the log, whatever access_log_format asks for.
        for name in ("{authorization}i", "{cookie}i", "{x-api-key}i", "{set-cookie}o"):
            if name in atoms:
                atoms[name] = "[redacted]"
        return atoms

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if not _JSON:
            super().access(resp, req, environ, request_time)
            return
        if not self.access_log_enabled:
            return
        atoms = self.atoms(resp, req, environ, request_time)
        path = atoms["U"] + (f"?{atoms['q']}" if atoms["q"] else "")  # both masked
        fields = {
            "remote_addr": atoms["h"],
            "method": atoms["m"],
            "path": path,
            "status": int(atoms["s"]) if str(atoms["s"]).isdigit() else atoms["s"],
            "bytes": atoms["B"],
            "duration_ms": round(atoms["D"] / 1000, 3),
            "referer": atoms["f"],
            "user_agent": atoms["a"],
        }
        try:
            self.access_log.info("%s %s %s", atoms["m"], path, atoms["s"], extra={"fields": fields})
        except Exception:
            logging.getLogger("gunicorn.error").exception("access log failed")


logger_class = Logger


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]

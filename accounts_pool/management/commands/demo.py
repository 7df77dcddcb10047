from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from simulator import SimulatedAnthropic

from ...demo import demo_build, demo_relay_traffic
from ...supervise import DEFAULT_GRACE, Child, supervise


class Command(BaseCommand):
    help = (
        "Run the app against the simulated provider with a demo team whose accounts show every "
        "reason code, with a web server, a worker and beat. Ctrl-C stops everything."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--relay-port", type=int, default=int(os.environ.get("RELAY_PORT", "0")) or None
        )

    def handle(self, *args: Any, **options: Any) -> None:
        with SimulatedAnthropic() as sim:
            provider = sim.env()
            for name, value in provider.items():  # this process, and the ones it starts
                setattr(settings, name, value)
            call_command("migrate", verbosity=0)
            demo = demo_build(sim)
            env = {**os.environ, **provider, "PYTHONUNBUFFERED": "1"}
            bin_dir = Path(sys.executable).parent
            relay_port = options["relay_port"] or options["port"] + 1
            celery = str(bin_dir / "celery")
            children = [
                Child(
                    "worker",
                    [
                        celery,
                        "-A",
                        "config",
                        "worker",
                        "--loglevel",
                        "WARNING",
                        "--concurrency",
                        "2",
                    ],
                    env,
                ),
                Child(
                    "beat",
                    [
                        *(celery, "-A", "config", "beat", "--loglevel", "WARNING"),
                        *("--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"),
                        "--pidfile=",
                    ],
                    env,
                ),
                Child(
                    "web",
                    [
                        sys.executable,
                        "manage.py",
                        "runserver",
                        "--noreload",
                        f"127.0.0.1:{options['port']}",
                    ],
                    env,
                ),
                Child(
                    "relay",
                    [
                        *(str(bin_dir / "uvicorn"), "config.asgi:application"),
                        *("--host", "127.0.0.1", "--port", str(relay_port), "--no-access-log"),
                    ],
                    env,
                ),
            ]
            url = f"http://127.0.0.1:{options['port']}"
            relay_url = f"http://127.0.0.1:{relay_port}/relay/anthropic"

            def announce() -> None:
                relayed = demo_relay_traffic(sim, relay_url, demo.consumer_key)
                self.stdout.write(
                    "\n".join(
                        [
                            "",
                            f"accounts-pool demo: {url}/pools/{demo.pool}/  (simulated provider at "
                            f"{sim.base_url})",
                            f"  team lead: {demo.lead} / {demo.lead_password}   (also the admin: "
                            f"{url}/admin/)",
                            f"  member:    {demo.member} / {demo.member_password}",
                            f"  API token (lead): {demo.api_token}",
                            f"  consumer key:     {demo.consumer_key}",
                            f"  relay: ANTHROPIC_BASE_URL={relay_url}"
                            f" ANTHROPIC_AUTH_TOKEN={demo.consumer_key}",
                            "  sent through the relay (the first one failed over after a 429): "
                            + "; ".join(relayed),
                            "  to try Add account: Paste tokens with the refresh token "
                            f"{demo.paste_refresh_token}, or upload {demo.import_file}; "
                            "Re-login on “needs re-login” offers that account on the login page.",
                            "Every reason code is on the pool page now; token_expired clears "
                            "when the next cycle refreshes it. Ctrl-C stops.",
                            "",
                        ]
                    )
                )
                self.stdout.flush()

            # Any of them that dies comes back; Ctrl-C stops them all (accounts_pool.supervise).
            supervise(children, DEFAULT_GRACE, on_started=announce)

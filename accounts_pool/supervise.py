"""Run the app's processes on one machine and bring back any that dies (`scripts/run`, the demo).

    python -m accounts_pool.supervise [--grace 30] NAME=COMMAND [NAME=COMMAND ...]

Each command runs in its own process group, so a Ctrl-C at the terminal reaches only this
supervisor, which then stops everything in order: SIGTERM to each process (a Celery worker
finishes the refresh in hand: a warm shutdown), up to `--grace` seconds, then SIGKILL to each
process group, leftovers included. A process that exits on its own is restarted (after 1 s,
doubling to 30 s while it keeps dying young), and its group is cleared of orphans first: a
Celery worker that dies when the broker goes away comes back instead of stopping the cycle.

The grace must be longer than the provider timeout (ANTHROPIC_HTTP_TIMEOUT, 20 s by default),
or a refresh can be cut after its request went out (an interrupted refresh). No Django here.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

DEFAULT_GRACE = 30.0
RESTART_FIRST = 1.0
RESTART_MAX = 30.0
STABLE_AFTER = 60.0  # a process that ran this long starts its restart delay afresh
POLL = 0.2


def restart_delay(previous: float | None, ran_for: float) -> float:
    """Seconds to wait before restarting a process that exited after `ran_for` seconds, the
    last wait having been `previous` (None: never restarted)."""
    if previous is None or ran_for >= STABLE_AFTER:
        return RESTART_FIRST
    return min(previous * 2, RESTART_MAX)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None  # None: this process's environment
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float | None = None
    restart_at: float | None = None
    restarts: int = 0
    pgid: int = 0
    exits: list[int | None] = field(default_factory=list)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=True)  # noqa: S603
        self.pgid = self.process.pid
        self.started = time.monotonic()
        self.restart_at = None
        say(f"{self.name} started (pid {self.process.pid})")


def say(line: str) -> None:
    print(f"supervise: {line}", file=sys.stderr, flush=True)


def _signal_group(pgid: int, signum: int) -> bool:
    """Signal a process group; False when nothing is left in it."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:  # a pid reused by someone else's group: not ours to touch
        return False
    return True


class Supervisor:
    def __init__(self, children: list[Child], grace: float) -> None:
        self.children = children
        self.grace = grace
        self.stopping = False
        self.hurry = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            self.hurry = True  # a second Ctrl-C: kill now
            return
        self.stopping = True
        say(f"{signal.Signals(signum).name}: stopping everything (grace {self.grace:g} s)")

    def run(self, on_started: Callable[[], None] | None = None) -> int:
        for child in self.children:
            child.start()
        if on_started is not None:
            on_started()
        while not self.stopping:
            self._tend(time.monotonic())
            time.sleep(POLL)
        return self.stop()

    def _tend(self, now: float) -> None:
        for child in self.children:
            process = child.process
            if process is not None and process.poll() is not None:
                ran = now - child.started
                child.exits.append(process.returncode)
                _signal_group(child.pgid, signal.SIGKILL)  # orphans of the dead one
                child.process = None
                child.delay = restart_delay(child.delay, ran)
                child.restart_at = now + child.delay
                say(
                    f"{child.name} exited with {process.returncode} after {ran:.0f} s; "
                    f"restarting in {child.delay:g} s"
                )
            if child.process is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                child.start()

    def stop(self) -> int:
        """SIGTERM each leader, wait up to the grace, then SIGKILL every group."""
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while not self.hurry and time.monotonic() < deadline:
            if all(c.process is None or c.process.poll() is not None for c in running):
                break
            time.sleep(POLL)
        for child in self.children:
            late = child.process is not None and child.process.poll() is None
            if child.pgid and _signal_group(child.pgid, signal.SIGKILL) and late:
                say(f"{child.name} did not stop within {self.grace:g} s: killed")
            if child.process is not None:
                child.process.wait()
        say("stopped")
        return 0


def parse(argv: list[str] | None) -> tuple[list[Child], float]:
    parser = argparse.ArgumentParser(prog="python -m accounts_pool.supervise", description=None)
    grace_default = float(os.environ.get("ACCOUNTS_POOL_STOP_GRACE", DEFAULT_GRACE))
    parser.add_argument(
        "--grace",
        type=float,
        default=grace_default,
        help="seconds a process has to stop after SIGTERM before it is killed "
        f"(ACCOUNTS_POOL_STOP_GRACE, default {DEFAULT_GRACE:g}; longer than the provider timeout)",
    )
    parser.add_argument("commands", nargs="+", metavar="NAME=COMMAND")
    args = parser.parse_args(argv)
    children = []
    for spec in args.commands:
        name, sep, command = spec.partition("=")
        if not sep or not name or not command.strip():
            parser.error(f"expected NAME=COMMAND, got {spec!r}")
        children.append(Child(name=name, argv=shlex.split(command)))
    if args.grace <= 0:
        parser.error("--grace must be positive")
    return children, args.grace


def supervise(
    children: list[Child], grace: float, on_started: Callable[[], None] | None = None
) -> int:
    """Run `children` until SIGINT, SIGTERM or SIGHUP, restarting any that exits; then stop
    them all (this process's handlers of those signals are replaced). `on_started` runs once
    every child has been started (the demo sends its relay traffic then)."""
    supervisor = Supervisor(children, grace)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    signal.signal(signal.SIGHUP, supervisor.on_signal)
    return supervisor.run(on_started)


def main(argv: list[str] | None = None) -> int:
    return supervise(*parse(argv))


if __name__ == "__main__":
    sys.exit(main())

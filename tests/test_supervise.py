"""What runs the app's processes on one machine (scripts/run, the demo): one that dies comes back,
and a stop leaves nothing running, not even a process that ignores SIGTERM or its children."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accounts_pool.supervise import RESTART_FIRST, RESTART_MAX, STABLE_AFTER, restart_delay

from . import processes

pytestmark = pytest.mark.slow


def tagged(tag: str) -> list[int]:
    """Pids of the live processes whose environment carries `tag`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if f"SUPERVISE_TEST_TAG={tag}".encode() in environ.split(b"\0") and ") Z" not in stat:
            found.append(int(entry.name))
    return found


def pid_of(log: Path, name: str) -> int | None:
    lines = [line for line in log.read_text().splitlines() if f"{name} started (pid" in line]
    return int(lines[-1].split("(pid ")[1].rstrip(")")) if lines else None


def test_the_restart_delay_doubles_while_a_process_dies_young_and_resets_after():
    assert restart_delay(None, 0.1) == RESTART_FIRST
    assert restart_delay(RESTART_FIRST, 0.1) == 2 * RESTART_FIRST
    assert restart_delay(RESTART_MAX, 0.1) == RESTART_MAX
    assert restart_delay(RESTART_MAX, STABLE_AFTER) == RESTART_FIRST


def test_a_dead_process_comes_back_and_ctrl_c_leaves_nothing_running(tmp_path):
    tag = secrets.token_hex(6)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    parent = 'import subprocess, time; subprocess.Popen(["sleep", "600"]); time.sleep(600)'
    log = tmp_path / "supervise.log"
    env = {**os.environ, "SUPERVISE_TEST_TAG": tag}
    command = [
        sys.executable,
        "-m",
        "accounts_pool.supervise",
        "--grace",
        "2",
        "plain=sleep 600",
        f"stubborn={sys.executable} -c '{stubborn}'",
        f"parent={sys.executable} -c '{parent}'",
    ]
    supervisor = processes.start(command, env, log)
    try:
        processes.wait_for(lambda: len(tagged(tag)) == 5, 20, "five processes", log)
        first = pid_of(log, "plain")
        assert first is not None
        os.kill(first, signal.SIGKILL)
        processes.wait_for(lambda: pid_of(log, "plain") != first, 10, "a restart", log)
        processes.wait_for(lambda: len(tagged(tag)) == 5, 10, "five processes again", log)
        assert "plain exited with -9" in log.read_text()
        # Ctrl-C at a terminal: SIGINT to the foreground process group (the supervisor's).
        started = time.monotonic()
        os.killpg(supervisor.pid, signal.SIGINT)
        supervisor.wait(timeout=20)
        took = time.monotonic() - started
    finally:
        processes.stop(supervisor)
        for pid in tagged(tag):
            os.kill(pid, signal.SIGKILL)
    assert supervisor.returncode == 0
    assert tagged(tag) == []
    assert "stubborn did not stop within 2 s: killed" in log.read_text()
    assert took < 10


def test_a_bad_command_line_is_refused_with_a_message():
    result = subprocess.run(
        [sys.executable, "-m", "accounts_pool.supervise", "no-equals-sign"],
        capture_output=True,
        text=True,
        check=False,
        cwd=processes.ROOT,
    )
    assert result.returncode == 2
    assert "expected NAME=COMMAND" in result.stderr

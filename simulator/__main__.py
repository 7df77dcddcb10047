"""Run the simulated Anthropic provider from a shell.

    python -m simulator --port 8765 --latency-ms 50 --accounts 3 --tokens-out var/sim-tokens.json

Prints the ANTHROPIC_* lines to point the app here (the OAuth URLs, then ANTHROPIC_API_URL for
the Messages API), then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from simulator.provider import SimulatedAnthropic


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    parser.add_argument(
        "--stream-chunks", type=int, default=4, help="text deltas per streamed answer"
    )
    parser.add_argument(
        "--chunk-delay-ms", type=float, default=0.0, help="pause before each streamed text delta"
    )
    parser.add_argument("--accounts", type=int, default=0, help="accounts to seed")
    parser.add_argument("--prefix", default="sim", help="email prefix of seeded accounts")
    parser.add_argument(
        "--tokens-out", type=Path, help='write [{"uuid", "email", "refresh_token"}] here'
    )
    return parser.parse_args(argv)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; return the exit status."""
    args = _parse(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sim = SimulatedAnthropic(
        host=args.host,
        port=args.port,
        latency=args.latency_ms / 1000,
        stream_chunks=args.stream_chunks,
        chunk_delay=args.chunk_delay_ms / 1000,
    )
    sim.start()
    try:
        accounts = sim.seed(args.accounts, prefix=args.prefix)
        if args.tokens_out is not None:
            rows = [
                {"uuid": a.uuid, "email": a.email, "refresh_token": a.refresh_token}
                for a in accounts
            ]
            _write_atomically(args.tokens_out, json.dumps(rows, indent=2) + "\n")
        for name, value in sim.env().items():
            print(f"{name}={value}")
        sys.stdout.flush()
        while not done.wait(0.2):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

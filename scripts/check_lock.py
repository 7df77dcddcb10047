"""Is requirements/lock/KIND.txt the lock of requirements/KIND.txt? (standard library only)

scripts/setup runs this before installing and stops when the answer is no: a pin changed, a
dependency added or removed without `scripts/lock`. Usage: python scripts/check_lock.py
[base|dev ...] (default both). Exit 1 names every mismatch."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#\\]+)")


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def source_pins(path: Path, seen: set[Path] | None = None) -> dict[str, str]:
    """The human-edited pins of a requirements file and the files it includes (-r)."""
    seen = seen if seen is not None else set()
    if path in seen:
        return {}
    seen.add(path)
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            pins.update(source_pins(path.parent / line.split(None, 1)[1], seen))
            continue
        match = PIN.match(line)
        if match is None:
            raise SystemExit(f"{path.name}: not an exact pin (name==version): {raw!r}")
        pins[normal(match.group(1))] = match.group(2)
    return pins


def lock_entries(path: Path) -> tuple[dict[str, str], set[str], set[str]]:
    """(every locked package -> version, those taken straight from the pins, those without a
    hash)."""
    locked: dict[str, str] = {}
    direct: set[str] = set()
    unhashed: set[str] = set()
    current = ""
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match is not None:
            current = normal(match.group(1))
            locked[current] = match.group(2)
            unhashed.add(current)
        elif current and "--hash=sha256:" in line:
            unhashed.discard(current)
        elif current and re.search(r"#\s+(via\s+)?-r requirements/", line):
            direct.add(current)
    return locked, direct, unhashed


def problems(kind: str) -> list[str]:
    source = REQUIREMENTS / f"{kind}.txt"
    lock = REQUIREMENTS / "lock" / f"{kind}.txt"
    if not lock.exists():
        return [f"{lock.relative_to(ROOT)} is missing"]
    pins = source_pins(source)
    locked, direct, unhashed = lock_entries(lock)
    found = []
    for name, version in sorted(pins.items()):
        if name not in locked:
            found.append(f"{name}=={version} is pinned but not locked")
        elif locked[name] != version:
            found.append(f"{name} is pinned at {version} but locked at {locked[name]}")
    for name in sorted(direct - set(pins)):
        found.append(f"{name} is locked as a pin of requirements/ but no longer pinned there")
    for name in sorted(unhashed):
        found.append(f"{name} is locked without a hash")
    return found


def main(kinds: list[str]) -> int:
    failed = False
    for kind in kinds or ["base", "dev"]:
        found = problems(kind)
        if found:
            failed = True
            print(f"requirements/lock/{kind}.txt is stale against requirements/{kind}.txt:",
                  file=sys.stderr)  # fmt: skip
            for problem in found:
                print(f"  - {problem}", file=sys.stderr)
    if failed:
        print("Run `scripts/lock` (with the dev environment) and commit requirements/lock/.",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The type checker keeps each operation's failures apart: mypy rejects the module under
tests/typing/ that records a token-endpoint failure as a quota failure (and the reverse)."""

from __future__ import annotations

import re
import subprocess

import pytest

from .processes import ROOT, VENV_BIN

pytestmark = pytest.mark.slow

MIXED = "tests/typing/operation_failures_mixed.py"


def _mypy_errors(path: str) -> list[tuple[int, str]]:
    """(line, message) of each error mypy reports in `path`, with the project's settings."""
    done = subprocess.run(
        [str(VENV_BIN / "mypy"), "--no-error-summary", path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: mypy itself failed
    found = re.findall(rf"^{re.escape(path)}:(\d+): error: (.*)$", done.stdout, re.M)
    return [(int(line), message) for line, message in found]


def test_mypy_rejects_mixing_token_and_quota_failures():
    errors = _mypy_errors(MIXED)
    source = (ROOT / MIXED).read_text().splitlines()
    expected = [n for n, line in enumerate(source, start=1) if "# error:" in line]
    assert [line for line, _ in errors] == expected
    assert all("[arg-type]" in message for _, message in errors)
    assert '"TokenFailure"; expected "QuotaFailure"' in errors[0][1]
    assert '"QuotaFailure"; expected "TokenFailure"' in errors[2][1]

"""The pool page's table as plain values: filter by status and reason, search label and email,
sort by any column. Pure (no ORM, no clock) so the rules are table-tested; the view parses the
URL into a TableQuery and renders what `table_view` returns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .state import ReasonCode, Status, Verdict
from .words import reason_words

STATUS_RANK = {Status.EXCLUDED: 0, Status.DEGRADED: 1, Status.USABLE: 2}
FAR = datetime.max.replace(tzinfo=None)


class WindowLike(Protocol):
    """What the table reads of a window: a state.Window, or a QuotaWindow row as it is."""

    @property
    def label(self) -> str: ...
    @property
    def utilization(self) -> float | None: ...
    @property
    def resets_at(self) -> datetime | None: ...
    @property
    def scoped(self) -> bool: ...
    @property
    def model_id(self) -> str: ...
    @property
    def model_name(self) -> str: ...


@dataclass(frozen=True)
class Line:
    """One account as the table reads it."""

    account_id: int
    label: str
    email: str
    is_oauth: bool
    verdict: Verdict
    windows: tuple[WindowLike, ...]
    access_expires_at: datetime | None

    @property
    def reason_codes(self) -> tuple[str, ...]:
        return tuple(r.code.value for r in self.verdict.reasons)

    @property
    def most_used(self) -> float:
        used = [w.utilization for w in self.windows if w.utilization is not None and not w.scoped]
        return max(used) if used else -1.0


def _stamp(value: datetime | None) -> float:
    return value.timestamp() if value is not None else float("inf")


SORTS: dict[str, Callable[[Line], Any]] = {
    "account": lambda line: line.label.lower(),
    "status": lambda line: (STATUS_RANK[line.verdict.status], line.label.lower()),
    "reason": lambda line: (line.reason_codes[:1] or ("~",), line.label.lower()),
    "until": lambda line: _stamp(line.verdict.next_change_at),
    "quota": lambda line: line.most_used,
    "token": lambda line: _stamp(line.access_expires_at),
}
COLUMNS = (
    ("account", "Account"),
    ("status", "Status"),
    ("reason", "Why"),
    ("until", "Until"),
    ("quota", "Quota"),
    ("token", "Token expires"),
)
STATUSES = tuple(s.value for s in Status)
REASONS = tuple(c.value for c in ReasonCode)
MAX_SEARCH = 100


@dataclass(frozen=True)
class TableQuery:
    status: str = ""
    reason: str = ""
    search: str = ""
    sort: str = "status"
    descending: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> TableQuery:
        """Read the URL; anything unknown falls back to the default (a URL is never an error)."""
        status = params.get("status", "")
        reason = params.get("reason", "")
        sort = params.get("sort", "status") or "status"
        descending = sort.startswith("-")
        sort = sort.lstrip("-")
        return cls(
            status=status if status in STATUSES else "",
            reason=reason if reason in REASONS else "",
            search=params.get("q", "").strip()[:MAX_SEARCH],
            sort=sort if sort in SORTS else "status",
            descending=descending and sort in SORTS,
        )

    def params(self, **changes: str) -> dict[str, str]:
        """The URL parameters of this view with some changed (empty ones left out)."""
        values = {
            "status": self.status,
            "reason": self.reason,
            "q": self.search,
            "sort": ("-" if self.descending else "") + self.sort,
        }
        values.update(changes)
        if values["sort"] == "status":
            values["sort"] = ""
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True)
class TableView:
    lines: list[Line]
    total: int
    status_counts: dict[str, int]
    reason_counts: list[tuple[str, str, int]]  # code, words, count: only reasons present


def _matches(line: Line, search: str) -> bool:
    needle = search.casefold()
    return needle in line.label.casefold() or needle in line.email.casefold()


def table_view(lines: Sequence[Line], query: TableQuery) -> TableView:
    """Counts come from the searched lines (so badges say what a click will show); the status
    and reason filters then narrow them, and the sort orders what is left."""
    searched = [line for line in lines if not query.search or _matches(line, query.search)]
    status_counts = {status: 0 for status in STATUSES}
    reasons: Counter[str] = Counter()
    for line in searched:
        status_counts[line.verdict.status.value] += 1
        reasons.update(set(line.reason_codes))
    shown = [
        line
        for line in searched
        if (not query.status or line.verdict.status.value == query.status)
        and (not query.reason or query.reason in line.reason_codes)
    ]
    shown.sort(key=SORTS["account"])
    shown.sort(key=SORTS[query.sort], reverse=query.descending)
    reason_counts = [(code, reason_words(code), reasons[code]) for code in REASONS if reasons[code]]
    return TableView(shown, len(lines), status_counts, reason_counts)

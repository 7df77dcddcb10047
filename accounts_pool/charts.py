"""Pictures drawn on the server as SVG (no CDN, no JavaScript), and the forecast as a sentence.

Each chart is an <svg role="img"> with a <title> and <desc> that say what it shows in words; the
pages put the same numbers in a table beside it for readers who cannot see the picture. Pure:
plain values in, markup out (every text escaped)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import count

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from . import state

# Colour-blind-safe (Okabe-Ito), each with 3:1 contrast or more against white.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#7a6a00", "#56b4e9", "#e69f00", "#555")
WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 28
_ids = count(1)


def _duration(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h"


def _utc(when: datetime) -> str:
    return f"{when:%H:%M} UTC, {when:%d %b}"


def forecast_sentence(forecast: state.PoolForecast, now: datetime) -> str:
    """'At this pace the pool runs dry at 15:40 UTC (in 2 h), 20 min before an account is back
    (16:00 UTC).'"""
    basis = state.ForecastBasis
    if forecast.basis == basis.UNKNOWN:
        return "No forecast yet: no account's quota is known."
    if forecast.basis == basis.NO_BURN:
        return "No quota used in the last hour: at this pace the pool does not run dry."
    if forecast.basis == basis.LASTS:
        days = state.FORECAST_HORIZON.days
        return f"At the last hour's pace the pool does not run dry within {days} days."
    back = ""
    if forecast.back_at is not None and forecast.runs_dry_at is not None:
        gap = _duration(forecast.back_at - forecast.runs_dry_at)
        back = f", {gap} before an account is usable again ({_utc(forecast.back_at)})"
    if forecast.basis == basis.DRY_NOW or forecast.runs_dry_at is None:
        again = f"; one is usable again at {_utc(forecast.back_at)}" if forecast.back_at else ""
        return f"No account is usable now{again}."
    return (
        f"At the last hour's pace the pool runs dry at {_utc(forecast.runs_dry_at)} "
        f"(in {_duration(forecast.runs_dry_at - now)}){back}."
    )


def _fmt_tokens(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.3g}M"
    if value >= 1_000:
        return f"{value / 1_000:.3g}k"
    return f"{value:.0f}"


def _nice_max(value: float) -> float:
    """The axis' top: a round number, at least 4 so that its five whole-token ticks
    (0, 1/4 … of it) are distinct."""
    if value <= 4:
        return 4.0
    magnitude = float(10 ** (len(str(int(value))) - 1))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * magnitude:
            return step * magnitude
    return value


def _frame(title: str, desc: str, body: list[str]) -> SafeString:
    n = next(_ids)
    return mark_safe(  # noqa: S308 - every piece of text below went through escape()
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-t{n} chart-d{n}" preserveAspectRatio="xMidYMid meet" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<title id="chart-t{n}">{escape(title)}</title><desc id="chart-d{n}">{escape(desc)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def _axis(max_value: float, label: Callable[[float], str]) -> list[str]:
    inner = HEIGHT - TOP - BOTTOM
    parts = []
    for i in range(5):
        y = TOP + inner - inner * i / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#d9dee5" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#5b6472">{escape(label(max_value * i / 4))}</text>'
        )
    return parts


def _x_labels(start: datetime, end: datetime, every: timedelta, fmt: str) -> list[str]:
    inner = WIDTH - LEFT - RIGHT
    span = (end - start).total_seconds() or 1
    parts = []
    tick = start
    while tick <= end:
        x = LEFT + inner * (tick - start).total_seconds() / span
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle" font-size="11" '
            f'fill="#5b6472">{escape(format(tick, fmt))}</text>'
        )
        tick += every
    return parts


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]
    colour: str


def stacked_bars(
    hours: Sequence[datetime], series: Sequence[tuple[str, Sequence[int]]], *, title: str
) -> tuple[SafeString, list[Series]]:
    """Tokens per hour stacked by key: the SVG and the series with their colours (the legend
    and the table fallback)."""
    coloured = [Series(name, v, PALETTE[i % len(PALETTE)]) for i, (name, v) in enumerate(series)]
    totals = [sum(s.values[i] for s in coloured) for i in range(len(hours))]
    top = _nice_max(max(totals, default=0))
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    width = inner_w / max(1, len(hours))
    body = _axis(top, _fmt_tokens)
    for i in range(len(hours)):
        base = 0.0
        for s in coloured:
            value = s.values[i]
            if not value:
                continue
            h = inner_h * value / top
            y = TOP + inner_h - base - h
            body.append(
                f'<rect x="{LEFT + i * width:.2f}" y="{y:.2f}" width="{max(width - 0.5, 0.5):.2f}" '
                f'height="{h:.2f}" fill="{s.colour}"/>'
            )
            base += h
    if hours:
        end = hours[-1] + timedelta(hours=1)
        body += _x_labels(hours[0], end, timedelta(days=1), "%d %b")
    total = sum(totals)
    busiest = max(range(len(hours)), key=lambda i: totals[i]) if total else None
    desc = f"{_fmt_tokens(total)} tokens in {len(hours)} hours from {len(coloured)} keys"
    if busiest is not None:
        desc += f"; busiest hour {_utc(hours[busiest])} with {_fmt_tokens(totals[busiest])}"
    desc += ". " + "; ".join(f"{s.name}: {_fmt_tokens(sum(s.values))}" for s in coloured)
    return _frame(title, desc, body), coloured


def downsample(
    points: Sequence[tuple[datetime, float]], start: datetime, end: datetime, buckets: int = 360
) -> list[tuple[datetime, float]]:
    """At most one point per 1/`buckets` of [start, end]: the highest of each bucket (a peak is
    what a reader looks for), at its own time. A week of minutes becomes a drawable path."""
    if len(points) <= buckets:
        return list(points)
    width = (end - start) / buckets
    best: dict[int, tuple[datetime, float]] = {}
    for at, value in points:
        slot = int((at - start) / width) if width else 0
        if slot not in best or value > best[slot][1]:
            best[slot] = (at, value)
    return [best[slot] for slot in sorted(best)]


@dataclass(frozen=True)
class Line:
    name: str
    points: Sequence[tuple[datetime, float]]
    colour: str
    dash: str = ""


def utilization_lines(
    lines: Sequence[tuple[str, Sequence[tuple[datetime, float]]]],
    resets: Sequence[datetime],
    *,
    start: datetime,
    end: datetime,
    title: str,
) -> tuple[SafeString, list[Line]]:
    """Window utilization (0-100%) over time, one line per window, resets as dashed marks."""
    dashes = ("", "6 3", "2 2")
    drawn = [
        Line(name, downsample(pts, start, end), PALETTE[i % len(PALETTE)], dashes[i % len(dashes)])
        for i, (name, pts) in enumerate(lines)
    ]
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = (end - start).total_seconds() or 1

    def x(at: datetime) -> float:
        return LEFT + inner_w * (at - start).total_seconds() / span

    def y(value: float) -> float:
        return TOP + inner_h - inner_h * min(100.0, max(0.0, value)) / 100

    body = _axis(100, lambda v: f"{v:.0f}%")
    for reset in resets:
        if start <= reset <= end:
            body.append(
                f'<line x1="{x(reset):.1f}" x2="{x(reset):.1f}" y1="{TOP}" '
                f'y2="{TOP + inner_h}" stroke="#5b6472" stroke-dasharray="3 3">'
                f"<title>{escape('reset ' + _utc(reset))}</title></line>"
            )
    for line in drawn:
        if not line.points:
            continue
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{x(at):.1f},{y(v):.1f}"
            for i, (at, v) in enumerate(line.points)
        )
        dash = f' stroke-dasharray="{line.dash}"' if line.dash else ""
        body.append(f'<path d="{path}" fill="none" stroke="{line.colour}" stroke-width="2"{dash}/>')
    every = timedelta(days=1) if end - start > timedelta(days=2) else timedelta(hours=6)
    body += _x_labels(start, end, every, "%d %b" if every.days else "%H:%M")
    parts = []
    for line in drawn:
        if line.points:
            _last_at, last = line.points[-1]
            peak = max(v for _, v in line.points)
            parts.append(f"{line.name}: now {last:.0f}%, peak {peak:.0f}%")
        else:
            parts.append(f"{line.name}: no observations")
    desc = "; ".join(parts) + f"; {len([r for r in resets if start <= r <= end])} resets marked."
    return _frame(title, desc, body), drawn

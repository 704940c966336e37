"""Server-rendered SVG charts for the dashboard: axes, ticks and labels, no JavaScript.

Each chart is drawn over the dashboard's window (time on the x axis, in the shop's time
zone) and returned with its legend, which the page shows above it in HTML. Colours are
fixed per series; axes and text use the page's text colour, so light and dark admin themes
both read.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from nudged.ops.dashboard.selectors import Window

WIDTH, HEIGHT = 900, 240
LEFT, RIGHT, TOP, BOTTOM = 84, 16, 14, 40
# Distinct on white and on the dark theme's background, and told apart by most colour-blind
# readers (Okabe and Ito's palette).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
# Ticks on the time axis: every 10 minutes over an hour, every 3 hours over a day.
X_TICKS = {"hour": timedelta(minutes=10), "day": timedelta(hours=3)}


@dataclass
class Series:
    label: str
    color: str
    # One value per bucket of the window; None where there is nothing to draw.
    values: Sequence[float | None]


@dataclass
class Chart:
    svg: SafeString
    legend: list[tuple[str, str]] = field(default_factory=list)
    empty: bool = False


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


class _Frame:
    """The plot area: maps times and values to coordinates, and draws the axes."""

    def __init__(
        self, window: Window, top: float, height: int = HEIGHT, *, whole: bool = False
    ) -> None:
        self.window = window
        self.height = height
        self.ticks = _value_ticks(top, whole=whole)
        self.top = self.ticks[-1]
        self.plot_w = WIDTH - LEFT - RIGHT
        self.plot_h = height - TOP - BOTTOM

    def x(self, at: datetime) -> float:
        span = (self.window.end - self.window.start).total_seconds()
        share = (at - self.window.start).total_seconds() / span
        return LEFT + min(max(share, 0.0), 1.0) * self.plot_w

    def x_bucket(self, index: int) -> float:
        return LEFT + index * self.plot_w / self.window.buckets

    def y(self, value: float) -> float:
        return TOP + self.plot_h - (value / self.top) * self.plot_h

    def axes(self, y_label: str) -> list[str]:
        parts = []
        for tick in self.ticks:
            y = self.y(tick)
            parts.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                'stroke="currentColor" stroke-opacity="0.15"/>'
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_number(tick)}</text>'
            )
        parts += self.time_axis()
        middle = TOP + self.plot_h / 2
        parts.append(
            f'<text x="14" y="{middle:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {middle:.1f})">{escape(y_label)}</text>'
        )
        return parts

    def time_axis(self) -> list[str]:
        bottom = TOP + self.plot_h
        parts = [
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" '
            'stroke="currentColor" stroke-opacity="0.6"/>'
        ]
        for tick in _time_ticks(self.window):
            x = self.x(tick)
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" '
                'stroke="currentColor" stroke-opacity="0.6"/>'
                f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">'
                f"{timezone.localtime(tick):%H:%M}</text>"
            )
        parts.append(
            f'<text x="{LEFT + self.plot_w / 2:.1f}" y="{self.height - 4}" text-anchor="middle">'
            f"time ({escape(timezone.get_current_timezone_name())})</text>"
        )
        return parts


def _svg(title: str, parts: list[str], height: int = HEIGHT) -> SafeString:
    return mark_safe(  # every value in parts is a number or escaped
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" font-size="12" fill="currentColor">'
        f"<title>{escape(title)}</title>{''.join(parts)}</svg>"
    )


def line_chart(
    window: Window,
    series: list[Series],
    *,
    title: str,
    y_label: str,
    step: bool = False,
    whole: bool = False,
) -> Chart:
    """Lines over the window's buckets; `step` draws each bucket's value flat across it.

    `whole`: the values count things, so the axis ticks are whole numbers.
    """
    values = [v for s in series for v in s.values if v is not None]
    frame = _Frame(window, max(values, default=0.0), whole=whole)
    parts = frame.axes(y_label)
    for s in series:
        parts.append(_path(frame, s, step=step))
    legend = [(s.label, s.color) for s in series]
    return Chart(svg=_svg(title, parts), legend=legend, empty=not any(values))


def _path(frame: _Frame, series: Series, *, step: bool) -> str:
    commands, drawing = [], False
    for index, value in enumerate(series.values):
        if value is None:
            drawing = False
            continue
        y = frame.y(value)
        if step:
            left, right = frame.x_bucket(index), frame.x_bucket(index + 1)
            commands.append(f"{'L' if drawing else 'M'}{left:.1f},{y:.1f}L{right:.1f},{y:.1f}")
        else:
            x = (frame.x_bucket(index) + frame.x_bucket(index + 1)) / 2
            commands.append(f"{'L' if drawing else 'M'}{x:.1f},{y:.1f}")
            if not drawing and _alone(series.values, index):
                # A lone value between gaps: a dot, or it would not show at all.
                commands.append("m-1.5,0a1.5,1.5 0 1,0 3,0a1.5,1.5 0 1,0 -3,0")
        drawing = True
    return (
        f'<path d="{"".join(commands)}" fill="none" stroke="{series.color}" stroke-width="2" '
        f'stroke-linejoin="round"><title>{escape(series.label)}</title></path>'
    )


def _alone(values: Sequence[float | None], index: int) -> bool:
    after = values[index + 1] if index + 1 < len(values) else None
    return after is None


def timeline_chart(
    window: Window, rows: list[tuple[str, str, list[tuple[datetime, datetime]]]], *, title: str
) -> Chart:
    """One lane per row (label, colour, periods): a bar for each period within the window."""
    lane = 26
    height = TOP + BOTTOM + lane * max(len(rows), 1)
    frame = _Frame(window, 1.0, height=height)
    parts = frame.time_axis()
    for index, (label, fill, periods) in enumerate(rows):
        y = TOP + index * lane
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + lane / 2 + 4:.1f}" text-anchor="end">'
            f"{escape(label)}</text>"
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y + lane / 2:.1f}" '
            f'y2="{y + lane / 2:.1f}" stroke="currentColor" stroke-opacity="0.15"/>'
        )
        for began, ended in periods:
            left, right = frame.x(began), frame.x(ended)
            minutes = (ended - began).total_seconds() / 60
            parts.append(
                f'<rect x="{left:.1f}" y="{y + 5}" width="{max(right - left, 2):.1f}" '
                f'height="{lane - 10}" fill="{fill}" rx="2"><title>{escape(label)} sold out '
                f"{timezone.localtime(began):%H:%M:%S}–{timezone.localtime(ended):%H:%M:%S} "
                f"({minutes:.1f} min)</title></rect>"
            )
    empty = not any(periods for _, _, periods in rows)
    return Chart(svg=_svg(title, parts, height), empty=empty)


def scatter_chart(
    window: Window,
    points: list[tuple[str, datetime, float]],
    colors: dict[str, str],
    *,
    title: str,
    y_label: str,
) -> Chart:
    """A dot per (label, time, value), coloured by label."""
    frame = _Frame(window, max((v for _, _, v in points), default=0.0))
    parts = frame.axes(y_label)
    for label, at, value in points:
        parts.append(
            f'<circle cx="{frame.x(at):.1f}" cy="{frame.y(value):.1f}" r="4" '
            f'fill="{colors.get(label, PALETTE[0])}" fill-opacity="0.8"><title>{escape(label)}: '
            f"{value:.1f} s, arrived {timezone.localtime(at):%H:%M:%S}</title></circle>"
        )
    shown = dict.fromkeys(label for label, _, _ in points)
    legend = [(label, colors.get(label, PALETTE[0])) for label in shown]
    return Chart(svg=_svg(title, parts), legend=legend, empty=not points)


def _value_ticks(top: float, *, whole: bool = False) -> list[float]:
    """0 up to a round number at or above `top`, in four or five round steps (whole: ≥ 1)."""
    if not top or top <= 0 or math.isnan(top):
        top = 1.0
    raw = max(top / 4, 1.0) if whole else top / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _number(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:.2f}".rstrip("0")


def _time_ticks(window: Window) -> list[datetime]:
    every = X_TICKS.get(window.name, timedelta(hours=1))
    local = timezone.localtime(window.start)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    tick = midnight + every * math.ceil((local - midnight) / every)
    ticks = []
    while tick <= window.end:
        ticks.append(tick)
        tick += every
    return ticks

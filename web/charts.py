"""Server-rendered SVG bar charts: geometry here, markup in `web/_bar_chart.html`.

No script and no inline style (the CSP forbids both); colours come from the stylesheet through
classes. Every bar has a <title>, and the chart sits next to a table with the same numbers, so
it reads without sight and without JavaScript.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDTH = 640
HEIGHT = 200
PAD_LEFT = 40
PAD_BOTTOM = 24
PAD_TOP = 10
MAX_BAR_WIDTH = 48


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    title: str
    tick: bool

    @property
    def cx(self) -> float:
        return round(self.x + self.width / 2, 1)


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    bars: list[Bar]
    max_value: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = PAD_LEFT
    baseline: int = HEIGHT - PAD_BOTTOM
    top: int = PAD_TOP

    @property
    def empty(self) -> bool:
        return self.max_value == 0

    @property
    def label_y(self) -> int:
        return self.baseline + 16

    @property
    def right(self) -> int:
        return self.width - 8


def _nice_max(value: int) -> int:
    """A round axis maximum at or above value (1, 2, 5 times 10^n)."""
    if value <= 0:
        return 0
    step = 1
    while True:
        for mult in (1, 2, 5):
            if step * mult >= value:
                return step * mult
        step *= 10


def bar_chart(*, title: str, points: list[tuple[str, int, str]], tick_every: int = 1) -> Chart:
    """points: (axis label, value, tooltip) in display order."""
    top_value = _nice_max(max((v for _, v, _ in points), default=0))
    plot_w = WIDTH - PAD_LEFT - 8
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    n = max(len(points), 1)
    slot = plot_w / n
    bar_w = min(max(slot * 0.7, 1.0), MAX_BAR_WIDTH)
    bars = []
    for i, (label, value, tip) in enumerate(points):
        h = (value / top_value * plot_h) if top_value else 0.0
        bars.append(
            Bar(
                x=round(PAD_LEFT + i * slot + (slot - bar_w) / 2, 1),
                y=round(HEIGHT - PAD_BOTTOM - h, 1),
                width=round(bar_w, 1),
                height=round(h, 1),
                label=label,
                title=tip,
                # Counted from the end, so the newest bar (today) always has its label.
                tick=(n - 1 - i) % tick_every == 0,
            )
        )
    return Chart(title=title, bars=bars, max_value=top_value)

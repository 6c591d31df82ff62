"""Bar charts drawn on the server as inline SVG (no script, no style attribute): the geometry the
staff templates draw. Every chart also has a table with the same numbers beside it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

# Okabe–Ito's colour-blind-safe colours, then three more of the same weight.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F6500",
           "#000000", "#6A3D9A", "#B15928", "#1F78B4")
ELIGIBLE = "#1d6631"
LEFT_OUT = "#8f1d1d"


@dataclass(frozen=True)
class Bar:
    """One horizontal bar: its label and value, and where it is drawn."""

    label: str
    value: int
    y: int
    width: float
    fill: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    label_width: int
    bar_height: int
    bars: list[Bar]


def horizontal_bars(items: Sequence[tuple[str, int, str]], *, width: int = 640,
                    label_width: int = 300, bar_height: int = 22, gap: int = 10) -> BarChart:
    """Bars for (label, value, colour) items, scaled to the largest value; the value is written
    after each bar, so the chart needs room for it on the right."""
    room = width - label_width - 70
    largest = max((value for _, value, _ in items), default=0) or 1
    bars = [Bar(label, value, gap + n * (bar_height + gap), room * value / largest, fill)
            for n, (label, value, fill) in enumerate(items)]
    return BarChart(width, gap + len(items) * (bar_height + gap), label_width, bar_height, bars)


@dataclass(frozen=True)
class Segment:
    """Part of a week's column: the decisions of one source, above the axis (opt-ins) or below."""

    x: float
    y: float
    width: float
    height: float
    fill: str
    title: str


@dataclass(frozen=True)
class WeekColumn:
    label: str
    x: float  # the centre, for the label
    segments: list[Segment]


@dataclass(frozen=True)
class MovementChart:
    width: int
    height: int
    left: int
    axis_y: float
    half_height: int
    top_value: int
    columns: list[WeekColumn]
    legend: list[tuple[str, str]]  # (source in words, colour)


def movement_chart(weeks: Sequence[tuple[date, Mapping[str, int], Mapping[str, int]]],
                   source_words: Mapping[str, str], *, width: int = 640,
                   half_height: int = 110) -> MovementChart:
    """Columns per week of (week start, opt-ins by source, opt-outs by source): opt-ins stacked
    upwards from the axis and opt-outs downwards, one colour per source, on one scale."""
    sources = [s for s in source_words if any(s in ins or s in outs for _, ins, outs in weeks)]
    sources += sorted({s for _, ins, outs in weeks for s in [*ins, *outs]} - set(sources))
    colour = {source: PALETTE[n % len(PALETTE)] for n, source in enumerate(sources)}
    top_value = max([sum(ins.values()) for _, ins, _ in weeks]
                    + [sum(outs.values()) for _, _, outs in weeks] + [1])
    left, top = 70, 16
    axis_y = top + half_height
    slot = (width - left - 10) / max(len(weeks), 1)
    bar = slot * 0.6
    columns = []
    for n, (starts, ins, outs) in enumerate(weeks):
        x = left + n * slot + (slot - bar) / 2
        segments = []
        for decisions, upwards, what in ((ins, True, "opt-in"), (outs, False, "opt-out")):
            edge = axis_y
            for source in sources:
                count = decisions.get(source, 0)
                if not count:
                    continue
                height = half_height * count / top_value
                y = edge - height if upwards else edge
                edge = y if upwards else edge + height
                words = source_words.get(source, source)
                segments.append(Segment(
                    x, y, bar, height, colour[source],
                    f"Week of {day_month(starts)}: {count} {what}{'' if count == 1 else 's'}, {words}"))
        columns.append(WeekColumn(day_month(starts), x + bar / 2, segments))
    legend = [(source_words.get(source, source), colour[source]) for source in sources]
    return MovementChart(width, int(axis_y + half_height + 40), left, axis_y, half_height, top_value,
                         columns, legend)


def day_month(day: date) -> str:
    """`4 May`: a week's first day as a chart's axis shows it."""
    return f"{day.day} {day:%b}"

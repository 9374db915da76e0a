"""The usage page's charts as SVG written on the server: no script, no library, nothing
fetched by the browser. Each chart carries a <title> per mark (a tooltip with the exact
number) and an aria-label; the numbers themselves are downloadable as CSV beside it."""

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 760
LEFT = 56  # room for the value axis
BOTTOM = 36  # room for the labels under the bars
TOP = 24  # room for the unit above the value axis
HEIGHT = 240


@dataclass(frozen=True)
class Series:
    name: str
    css_class: str


def _nice_ceiling(value: float) -> float:
    """The axis maximum: the smallest 1, 2 or 5 times a power of ten not below `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    while power > value:
        power /= 10
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def _number(value: float) -> str:
    """Up to two decimals, trailing zeros dropped: 0.25, 12.5, 50."""
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _svg(body: list[str], *, label: str, height: int) -> SafeString:
    return mark_safe(  # noqa: S308 - every text piece below went through escape()
        f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        + "".join(body)
        + "</svg>"
    )


def _axis(maximum: float, *, unit: str, plot_height: int) -> list[str]:
    parts = []
    for step in range(5):
        value = maximum * step / 4
        y = TOP + plot_height - plot_height * step / 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(_number(value))}</text>"
        )
    parts.append(f'<text class="axis" x="4" y="{TOP - 12}" text-anchor="start">{escape(unit)}</text>')
    return parts


def grouped_bars(
    groups: Sequence[tuple[str, Sequence[float]]], *, series: Sequence[Series], unit: str, label: str
) -> SafeString:
    """Vertical bars, one group per label (a week), one bar per series in each group."""
    plot_height = HEIGHT - TOP - BOTTOM
    maximum = _nice_ceiling(max((v for _, values in groups for v in values), default=0.0))
    parts = _axis(maximum, unit=unit, plot_height=plot_height)
    slot = (WIDTH - LEFT) / max(len(groups), 1)
    bar = max(min(slot * 0.8 / max(len(series), 1), 28), 1)
    every = max(1, round(len(groups) / 12))  # at most about 12 labels under the axis
    for n, (name, values) in enumerate(groups):
        x0 = LEFT + n * slot + (slot - bar * len(series)) / 2
        for k, (value, kind) in enumerate(zip(values, series, strict=True)):
            h = plot_height * value / maximum
            parts.append(
                f'<rect class="{kind.css_class}" x="{x0 + k * bar:.1f}" y="{TOP + plot_height - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}"><title>{escape(name)}: {escape(kind.name)} '
                f"{escape(_number(value))} {escape(unit)}</title></rect>"
            )
        if n % every == 0:
            parts.append(
                f'<text class="axis" x="{LEFT + n * slot + slot / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                f'text-anchor="middle">{escape(name)}</text>'
            )
    for k, kind in enumerate(series):  # the legend
        x = LEFT + k * 170
        parts.append(
            f'<rect class="{kind.css_class}" x="{x}" y="{HEIGHT - 12}" width="10" height="10"/>'
            f'<text class="legend" x="{x + 14}" y="{HEIGHT - 3}">{escape(kind.name)}</text>'
        )
    return _svg(parts, label=label, height=HEIGHT)


def horizontal_bars(items: Sequence[tuple[str, float]], *, unit: str, label: str) -> SafeString:
    """One bar per item, longest first as given."""
    row = 22
    height = TOP + row * max(len(items), 1) + 8
    name_width = 150
    maximum = _nice_ceiling(max((value for _, value in items), default=0.0))
    parts = []
    for n, (name, value) in enumerate(items):
        y = TOP + n * row
        w = (WIDTH - name_width - 90) * value / maximum
        parts.append(
            f'<text class="axis" x="{name_width - 6}" y="{y + 14}" text-anchor="end">{escape(name)}</text>'
            f'<rect class="bar-run" x="{name_width}" y="{y + 2}" width="{w:.1f}" height="{row - 6}">'
            f"<title>{escape(name)}: {escape(_number(value))} {escape(unit)}</title></rect>"
            f'<text class="legend" x="{name_width + w + 6:.1f}" y="{y + 14}">{escape(_number(value))}</text>'
        )
    return _svg(parts, label=label, height=height)


def heatmap(rows: Sequence[tuple[str, Sequence[float]]], *, columns: Sequence[str], label: str) -> SafeString:
    """Rows (GPUs) by columns (days or weeks), each cell shaded by a share from 0 to 1."""
    name_width = 130
    cell_height = 18
    cell_width = (WIDTH - name_width) / max(len(columns), 1)
    height = TOP + cell_height * max(len(rows), 1) + BOTTOM
    parts = []
    for r, (name, shares) in enumerate(rows):
        y = TOP + r * cell_height
        parts.append(
            f'<text class="axis" x="{name_width - 6}" y="{y + 13}" text-anchor="end">{escape(name)}</text>'
        )
        for c, share in enumerate(shares):
            parts.append(
                f'<rect class="cell" x="{name_width + c * cell_width:.1f}" y="{y}" width="{cell_width:.1f}" '
                f'height="{cell_height - 2}" fill-opacity="{0.06 + 0.94 * min(max(share, 0.0), 1.0):.2f}">'
                f"<title>{escape(name)}, {escape(columns[c])}: {share:.0%}</title></rect>"
            )
    every = max(1, round(len(columns) / 10))
    for c, name in enumerate(columns):
        if c % every == 0:
            x = name_width + c * cell_width
            parts.append(f'<text class="axis" x="{x:.1f}" y="{height - BOTTOM + 16}">{escape(name)}</text>')
    return _svg(parts, label=label, height=height)

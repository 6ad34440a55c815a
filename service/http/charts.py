"""Inline SVG charts, drawn on the server: no JavaScript, no plotting library per request.

:func:`feasibility_svg` draws one row per node, on a common scale of *percent of the node's
target* so that a company of millions and a rep of thousands share one chart: the 10-90% range
of the period's revenue as a band, the 10-70% range (must-hit to stretch) darker, the median as
a tick, revenue closed to date as a solid bar, and the target as a red line at 100%.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

from service.http.schemas import FeasibilityNode

__all__ = ["fan_svg", "feasibility_svg", "money", "paired_bars_svg", "risk_colour", "trend_svg"]

_ROW = 24
_LABEL = 190
_PLOT = 520
_RIGHT = 70
_TOP = 28
_MIN_SCALE, _MAX_SCALE = 1.5, 2.5  # the x axis runs to 150%..250% of target


def risk_colour(p_attain: float | None) -> str:
    """Green when the target is likely, amber when it is a coin toss, red when it is unlikely."""
    if p_attain is None:
        return "#6b7280"
    if p_attain >= 0.7:
        return "#15803d"
    if p_attain >= 0.4:
        return "#b45309"
    return "#b91c1c"


def _ratio(value: float | None, target: float) -> float:
    return 0.0 if value is None else max(value, 0.0) / target


def _x(ratio: float, scale: float) -> float:
    return _LABEL + _PLOT * min(ratio, scale) / scale


def _row(node: FeasibilityNode, y: float, scale: float) -> list[str]:
    target = float(node.target or 1.0)
    p10, p50, p90 = (_ratio(v, target) for v in (node.p10, node.p50, node.p90))
    stretch, closed = _ratio(node.stretch, target), _ratio(node.closed_to_date, target)
    label = escape(f"{node.level} {node.key}" if node.level != "company" else "company")
    p_text = "n/a" if node.p_attain is None else f"{node.p_attain:.0%}"
    mid = y + _ROW / 2
    return [
        f'<text x="{_LABEL - 8}" y="{mid + 4}" text-anchor="end" class="label">{label}</text>',
        f'<rect x="{_x(p10, scale):.1f}" y="{y + 5}" width="{_x(p90, scale) - _x(p10, scale):.1f}"'
        f' height="{_ROW - 10}" fill="#bfdbfe"><title>P10-P90</title></rect>',
        f'<rect x="{_x(p10, scale):.1f}" y="{y + 5}" '
        f'width="{_x(stretch, scale) - _x(p10, scale):.1f}" height="{_ROW - 10}" '
        f'fill="#60a5fa"><title>must-hit to stretch</title></rect>',
        f'<rect x="{_LABEL}" y="{mid - 2}" width="{_x(closed, scale) - _LABEL:.1f}" height="4" '
        f'fill="#1e3a8a"><title>closed to date</title></rect>',
        f'<line x1="{_x(p50, scale):.1f}" x2="{_x(p50, scale):.1f}" y1="{y + 3}" '
        f'y2="{y + _ROW - 3}" stroke="#111827" stroke-width="2"><title>median</title></line>',
        f'<text x="{_LABEL + _PLOT + 8}" y="{mid + 4}" class="p" '
        f'fill="{risk_colour(node.p_attain)}">{p_text}</text>',
    ]


def _axis(scale: float, height: float) -> list[str]:
    parts = []
    step = 0.5
    tick = 0.0
    while tick <= scale + 1e-9:
        x = _x(tick, scale)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP - 4}" y2="{height}" '
                     'stroke="#e5e7eb"/>')
        parts.append(f'<text x="{x:.1f}" y="{_TOP - 8}" text-anchor="middle" class="tick">'
                     f'{tick:.0%}</text>')
        tick += step
    return parts


def feasibility_svg(nodes: Sequence[FeasibilityNode], title: str) -> str:
    """The chart of the nodes that have a positive target, as an ``<svg>`` element."""
    drawn = [n for n in nodes if n.target is not None and n.target > 0]
    height = _TOP + _ROW * max(len(drawn), 1) + 8
    width = _LABEL + _PLOT + _RIGHT
    highest = max((_ratio(n.p90, float(n.target or 1)) for n in drawn), default=1.0)
    scale = min(max(_MIN_SCALE, highest * 1.05), _MAX_SCALE)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>",
             "<style>.label{font:12px sans-serif;fill:#111827}.tick{font:10px sans-serif;"
             "fill:#6b7280}.p{font:bold 12px sans-serif}</style>",
             *_axis(scale, height - 4)]
    for i, node in enumerate(drawn):
        parts += _row(node, _TOP + i * _ROW, scale)
    target_x = _x(1.0, scale)
    parts.append(f'<line x1="{target_x:.1f}" x2="{target_x:.1f}" y1="{_TOP - 4}" '
                 f'y2="{height - 4}" stroke="#dc2626" stroke-width="2" class="target-line">'
                 "<title>target</title></line>")
    if not drawn:
        parts.append(f'<text x="{_LABEL}" y="{_TOP + 16}" class="label">no node has a target '
                     "in this period</text>")
    parts.append("</svg>")
    return "\n".join(parts)


# === the board's charts ========================================================================


def money(value: float | None) -> str:
    """1234567 -> 1.23M: amounts as people read them."""
    if value is None:
        return "n/a"
    # Rounded to 3 significant digits first, so 999,600 reads 1M (not 1e+03k).
    rounded = float(f"{value:.3g}") if value else 0.0
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(rounded) >= size:
            return f"{rounded / size:.3g}{suffix}"
    return f"{value:.0f}"


def _svg_open(width: float, height: float, label: str, css_class: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart {css_class}" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'aria-label="{escape(label)}">',
            f"<title>{escape(label)}</title>",
            "<style>.label{font:12px sans-serif;fill:#111827}.tick{font:10px sans-serif;"
            "fill:#4b5563}.p{font:bold 12px sans-serif}</style>"]


def fan_svg(*, target: float | None, closed: float, p10: float, p50: float, p90: float,
            stretch: float, start_day: float, as_of_day: float, end_day: float,
            label: str, path: Sequence[float] | None = None) -> str:
    """One node's period as a fan: revenue closed to date, then from as-of to the period end
    the 10-90% range of the simulated total, the must-hit (P10) to stretch (P70) range darker,
    the median as a line, and the target as a dashed red line. ``*_day``: days since any fixed
    origin.

    ``path``: the closed to date cumulated at the end of each day from the period's start
    (:func:`service.usecases.board.closed_path`), drawn as a step line that ends at
    ``closed``; without it, a straight line from the start to ``closed``."""
    width, height, left, right, top, bottom = 600, 230, 64, 96, 14, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    span = max(end_day - start_day, 1.0)
    now = min(max(as_of_day, start_day), end_day)
    highest = max(p90, stretch, closed, target or 0.0, 1.0) * 1.08

    def x(day: float) -> float:
        return left + plot_w * (day - start_day) / span

    def y(value: float) -> float:
        return top + plot_h * (1 - max(value, 0.0) / highest)

    parts = _svg_open(width, height, label, "fan")
    for i in range(5):  # horizontal grid with amounts
        value = highest * i / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" '
                     f'y2="{y(value):.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{left - 6}" y="{y(value) + 3:.1f}" text-anchor="end" '
                     f'class="tick">{money(value)}</text>')
    parts.append(f'<text x="{left}" y="{height - 8}" class="tick">period start</text>')
    parts.append(f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end" '
                 'class="tick">period end</text>')
    if start_day < now < end_day:
        parts.append(f'<line x1="{x(now):.1f}" x2="{x(now):.1f}" y1="{top}" '
                     f'y2="{top + plot_h}" stroke="#9ca3af" stroke-dasharray="3 3"/>')
        parts.append(f'<text x="{x(now):.1f}" y="{height - 8}" text-anchor="middle" '
                     'class="tick">as of</text>')
    cx, cy = x(now), y(closed)
    ex = x(end_day)
    if now < end_day:
        parts.append(f'<polygon points="{cx:.1f},{cy:.1f} {ex:.1f},{y(p90):.1f} '
                     f'{ex:.1f},{y(p10):.1f}" fill="#bfdbfe" class="band">'
                     "<title>P10-P90</title></polygon>")
        parts.append(f'<polygon points="{cx:.1f},{cy:.1f} {ex:.1f},{y(stretch):.1f} '
                     f'{ex:.1f},{y(p10):.1f}" fill="#60a5fa"><title>must-hit to stretch'
                     "</title></polygon>")
        parts.append(f'<line x1="{cx:.1f}" y1="{cy:.1f}" x2="{ex:.1f}" y2="{y(p50):.1f}" '
                     'stroke="#111827" stroke-width="2"><title>median</title></line>')
    if path:
        points = [(x(start_day), y(0))]
        for day, total in enumerate(path, start=1):  # day ``day - 1`` ends at ``total``
            at, level = x(min(start_day + day, now)), y(total)
            if level != points[-1][1]:  # a step where the day added revenue
                points += [(at, points[-1][1]), (at, level)]
        points.append((cx, cy))
        drawn = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        parts.append(f'<polyline points="{drawn}" fill="none" stroke="#1e3a8a" '
                     'stroke-width="3" stroke-linejoin="round" class="closed closed-path">'
                     "<title>closed to date, day by day</title></polyline>")
    else:
        parts.append(f'<line x1="{x(start_day):.1f}" y1="{y(0):.1f}" x2="{cx:.1f}" '
                     f'y2="{cy:.1f}" stroke="#1e3a8a" stroke-width="3" class="closed">'
                     "<title>closed to date</title></line>")
    if target:
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(target):.1f}" '
                     f'y2="{y(target):.1f}" stroke="#dc2626" stroke-width="2" '
                     'stroke-dasharray="6 3" class="target-line"><title>target</title></line>')
    labels = [("P90", p90), ("P50", p50), ("P10", p10)] if now < end_day else []
    labels += [("closed", closed)] + ([("target", target)] if target else [])
    placed: list[float] = []
    for name, value in sorted(labels, key=lambda item: -item[1]):
        at = y(value) + 4
        while any(abs(at - other) < 12 for other in placed):
            at += 12
        placed.append(at)
        colour = "#b91c1c" if name == "target" else "#111827"
        parts.append(f'<text x="{left + plot_w + 6}" y="{at:.1f}" class="label" '
                     f'fill="{colour}" style="fill:{colour}">{name} {money(value)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def paired_bars_svg(rows: Sequence[tuple[str, float, float]], names: tuple[str, str],
                    label: str) -> str:
    """Two bars per row (``(name, first, second)``), e.g. expected revenue baseline beside a
    scenario, on one scale, with each value written at the bar's end."""
    bar, gap, left, plot, top = 10, 10, 190, 420, 24
    height = top + len(rows) * (2 * bar + gap) + 8
    width = left + plot + 80
    highest = max([max(a, b) for _, a, b in rows] + [1.0])
    parts = _svg_open(width, height, label, "pairs")
    parts.append(f'<rect x="{left}" y="4" width="10" height="10" fill="#94a3b8"/>'
                 f'<text x="{left + 14}" y="13" class="tick">{escape(names[0])}</text>'
                 f'<rect x="{left + 120}" y="4" width="10" height="10" fill="#c2410c"/>'
                 f'<text x="{left + 134}" y="13" class="tick">{escape(names[1])}</text>')
    for i, (name, first, second) in enumerate(rows):
        y0 = top + i * (2 * bar + gap)
        parts.append(f'<text x="{left - 8}" y="{y0 + bar + 4}" text-anchor="end" '
                     f'class="label">{escape(name)}</text>')
        for j, (value, colour) in enumerate(((first, "#94a3b8"), (second, "#c2410c"))):
            w = plot * max(value, 0.0) / highest
            parts.append(f'<rect x="{left}" y="{y0 + j * bar}" width="{w:.1f}" '
                         f'height="{bar - 1}" fill="{colour}"><title>{escape(names[j])}: '
                         f'{money(value)}</title></rect>')
            parts.append(f'<text x="{left + w + 4:.1f}" y="{y0 + j * bar + bar - 2}" '
                         f'class="tick">{money(value)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def trend_svg(points: Sequence[tuple[str, float | None, float | None, float | None]],
              target: float | None, label: str) -> str:
    """P(attain) (right axis, percent) and the median forecast and closed to date (left axis,
    amounts) at each snapshot date: ``(date, p_attain, p50, closed)``."""
    width, height, left, right, top, bottom = 600, 220, 64, 48, 14, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    amounts = [v for _, _, a, b in points for v in (a, b) if v is not None]
    highest = max([*amounts, target or 0.0, 1.0]) * 1.08
    n = len(points)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y_amount(value: float) -> float:
        return top + plot_h * (1 - max(value, 0.0) / highest)

    def y_share(value: float) -> float:
        return top + plot_h * (1 - min(max(value, 0.0), 1.0))

    parts = _svg_open(width, height, label, "trend")
    for i in range(5):
        value = highest * i / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y_amount(value):.1f}" '
                     f'y2="{y_amount(value):.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{left - 6}" y="{y_amount(value) + 3:.1f}" text-anchor="end" '
                     f'class="tick">{money(value)}</text>')
        parts.append(f'<text x="{left + plot_w + 6}" y="{y_share(i / 4) + 3:.1f}" '
                     f'class="tick">{i * 25}%</text>')
    if target:
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y_amount(target):.1f}" '
                     f'y2="{y_amount(target):.1f}" stroke="#dc2626" stroke-dasharray="6 3">'
                     "<title>target</title></line>")
    series = ((2, "#111827", "median forecast (P50)", y_amount),
              (3, "#1e3a8a", "closed to date", y_amount),
              (1, "#15803d", "P(attain)", y_share))
    for index, colour, name, scale in series:
        xy = [(x(i), scale(float(p[index])))  # type: ignore[arg-type]
              for i, p in enumerate(points) if p[index] is not None]
        if not xy:
            continue
        dash = ' stroke-dasharray="2 2"' if index == 1 else ""
        if len(xy) > 1:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in xy)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                         f'stroke-width="2"{dash}><title>{name}</title></polyline>')
        for a, b in xy:
            parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}">'
                         f"<title>{name}</title></circle>")
    for i, point in enumerate(points):
        parts.append(f'<text x="{x(i):.1f}" y="{height - 24}" text-anchor="middle" '
                     f'class="tick">{escape(point[0])}</text>')
    legend = [("#111827", "P50"), ("#1e3a8a", "closed"), ("#15803d", "P(attain), right axis")]
    for j, (colour, name) in enumerate(legend):
        lx = left + j * 140
        parts.append(f'<rect x="{lx}" y="{height - 12}" width="10" height="3" '
                     f'fill="{colour}"/><text x="{lx + 14}" y="{height - 7}" '
                     f'class="tick">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)

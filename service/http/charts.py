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

__all__ = ["feasibility_svg", "risk_colour"]

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

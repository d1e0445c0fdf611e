"""A dependency-free SVG scatter plot, for figures the docs embed (no matplotlib needed)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape


@dataclass
class Series:
    """Points of one legend entry: ``xs``, ``ys`` and their marker colour; ``line`` joins them."""

    label: str
    xs: list[float]
    ys: list[float]
    color: str
    line: bool = False


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    start = step * (lo // step)
    ticks, v = [], start
    while v <= hi + 1e-9 * step:
        if v >= lo - 1e-9 * step:
            ticks.append(round(v, 10))
        v += step
    return ticks


def scatter_svg(series: list[Series], xlabel: str, ylabel: str, title: str, width: int = 640, height: int = 400) -> str:
    """An SVG document: axes with ticks, one marker per point, labels and a legend."""
    xs = [x for s in series for x in s.xs]
    ys = [y for s in series for y in s.ys]
    if not xs:
        raise ValueError("scatter_svg needs at least one point")
    pad_x, pad_y = 0.05 * ((max(xs) - min(xs)) or 1), 0.1 * ((max(ys) - min(ys)) or 1)
    x0, x1, y0, y1 = min(xs) - pad_x, max(xs) + pad_x, min(ys) - pad_y, max(ys) + pad_y
    left, right, top, bottom = 70, 190, 40, 55
    W, H = width - left - right, height - top - bottom
    px = lambda x: left + (x - x0) / (x1 - x0) * W  # noqa: E731
    py = lambda y: top + H - (y - y0) / (y1 - y0) * H  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left + W / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{W}" height="{H}" fill="none" stroke="#444"/>']
    for t in _ticks(x0, x1):
        out.append(f'<line x1="{px(t):.1f}" y1="{top + H}" x2="{px(t):.1f}" y2="{top + H + 5}" stroke="#444"/>')
        out.append(f'<text x="{px(t):.1f}" y="{top + H + 18}" text-anchor="middle">{t:g}</text>')
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{left - 5}" y1="{py(t):.1f}" x2="{left}" y2="{py(t):.1f}" stroke="#444"/>')
        out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + W}" y2="{py(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 8}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    out.append(f'<text x="{left + W / 2}" y="{height - 12}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text x="18" y="{top + H / 2}" text-anchor="middle" transform="rotate(-90 18 {top + H / 2})">{escape(ylabel)}</text>')
    for i, s in enumerate(series):
        pts = list(zip(s.xs, s.ys))
        if s.line and len(pts) > 1:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(pts))
            out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="1.5"/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="5" fill="{s.color}"/>')
        ly = top + 10 + 20 * i
        out.append(f'<circle cx="{left + W + 18}" cy="{ly}" r="5" fill="{s.color}"/>')
        out.append(f'<text x="{left + W + 28}" y="{ly + 4}">{escape(s.label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"

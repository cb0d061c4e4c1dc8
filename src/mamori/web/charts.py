"""Bar charts drawn on the server as SVG (no JavaScript, nothing fetched from elsewhere)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

__all__ = ["bars", "hbars", "human"]


def _safe(html: str) -> Markup:
    # Every piece of text that goes into a chart passed through html.escape above.
    return Markup(html)  # noqa: S704


def human(value: float, unit: str = "") -> str:
    for prefix in ("", "k", "M", "G", "T", "P"):
        if abs(value) < 1000:
            return (
                f"{value:.0f} {prefix}{unit}".strip()
                if prefix == ""
                else f"{value:.1f} {prefix}{unit}"
            )
        value /= 1000
    return f"{value:.1f} E{unit}"


def bars(
    points: Sequence[tuple[str, int]],
    *,
    title: str,
    unit: str = "",
    width: int = 900,
    height: int = 220,
) -> Markup:
    """Vertical bars, one per point (e.g. per hour); every few labels shown under the axis."""
    if not points:
        return _safe(f'<p class="empty">{escape(title)}: no data</p>')
    top = max(v for _, v in points) or 1
    left, bottom, plot_h = 70, 40, height - 60
    step = (width - left - 10) / len(points)
    every = max(1, len(points) // 8)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{left}" y="14" class="title">{escape(title)}</text>',
        f'<text x="{left - 6}" y="{height - bottom - plot_h + 4}" text-anchor="end" '
        f'class="axis">{escape(human(top, unit))}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
        'stroke="#888"/>',
    ]
    for i, (label, v) in enumerate(points):
        h = plot_h * v / top
        x = left + i * step
        out.append(
            f'<rect x="{x + 1:.1f}" y="{height - bottom - h:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="#3b6ea5"><title>{escape(label)}: '
            f"{escape(human(v, unit))}</title></rect>"
        )
        if i % every == 0:
            out.append(
                f'<text x="{x + step / 2:.1f}" y="{height - bottom + 14}" text-anchor="middle" '
                f'class="axis">{escape(label)}</text>'
            )
    out.append("</svg>")
    return _safe("".join(out))


def hbars(
    points: Sequence[tuple[str, int]], *, title: str, unit: str = "", width: int = 600
) -> Markup:
    """Horizontal bars with their labels, for top-N lists."""
    if not points:
        return _safe(f'<p class="empty">{escape(title)}: no data</p>')
    top = max(v for _, v in points) or 1
    row, left = 22, 180
    height = 24 + row * len(points)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="4" y="14" class="title">{escape(title)}</text>',
    ]
    span = width - left - 90
    for i, (label, v) in enumerate(points):
        y = 22 + i * row
        w = span * v / top
        out.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" class="axis">'
            f"{escape(label)}</text>"
            f'<rect x="{left}" y="{y + 2}" width="{max(w, 1):.1f}" height="{row - 6}" '
            f'fill="#3b6ea5"/><text x="{left + w + 6:.1f}" y="{y + 14}" class="axis">'
            f"{escape(human(v, unit))}</text>"
        )
    out.append("</svg>")
    return _safe("".join(out))

"""Charts drawn on the server as SVG (no JavaScript, nothing fetched from elsewhere): bars, top-N
bars, and bars on a true time axis."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from markupsafe import Markup

__all__ = ["bars", "hbars", "human", "timeseries"]


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


def timeseries(
    points: Sequence[tuple[datetime, int]],
    *,
    title: str,
    since: datetime,
    until: datetime,
    step: timedelta = timedelta(hours=1),
    unit: str = "",
    zone: str = "UTC",
    marks: Sequence[tuple[datetime, str, str]] = (),
    bands: Sequence[tuple[datetime, datetime, str, str]] = (),
    width: int = 900,
    height: int = 240,
) -> Markup:
    """Bars on a true time axis from ``since`` to ``until``: a bar sits where its time is (a
    missing hour is a gap, not the next bar), ticks fall on whole hours or days in ``zone``.
    ``marks``: (time, label, class) drawn as vertical lines (attacks, actions); ``bands``: (from,
    to, label, class) shaded behind the bars (an attack's span, a rule in force)."""
    if until <= since:
        until = since + step
    left, right, bottom, top_pad = 70, 10, 44, 24
    plot_w, plot_h = width - left - right, height - bottom - top_pad
    span = (until - since).total_seconds()

    def x(t: datetime) -> float:
        return left + plot_w * (t - since).total_seconds() / span

    peak = max((v for _, v in points), default=0) or 1
    tz = ZoneInfo(zone)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{left}" y="14" class="title">{escape(title)}</text>',
        f'<text x="{left - 6}" y="{top_pad + 4}" text-anchor="end" class="axis">'
        f"{escape(human(peak, unit))}</text>",
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
        'stroke="#888"/>',
    ]
    # ticks: whole hours or days in the ISP's zone, at most about ten
    local0 = since.astimezone(tz)
    hours = span / 3600
    tick_h = next((h for h in (1, 2, 3, 6, 12, 24, 48, 168) if hours / h <= 10), 336)
    if tick_h >= 24:
        t = local0.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        t = local0.replace(minute=0, second=0, microsecond=0)
    while t <= until:
        if t >= since:
            xt = x(t)
            label = t.strftime("%m-%d") if tick_h >= 24 else t.strftime("%m-%d %H:%M")
            out.append(
                f'<line x1="{xt:.1f}" y1="{height - bottom}" x2="{xt:.1f}" '
                f'y2="{height - bottom + 4}" stroke="#888"/>'
                f'<text x="{xt:.1f}" y="{height - bottom + 16}" text-anchor="middle" '
                f'class="axis">{escape(label)}</text>'
            )
        t = (t + timedelta(hours=tick_h)).astimezone(tz)
    out.append(
        f'<text x="{width - right}" y="{height - 4}" text-anchor="end" class="axis">'
        f"{escape(local0.tzname() or zone)}</text>"
    )
    for i, (b0, b1, label, cls) in enumerate(bands):
        b0, b1 = max(b0, since), min(b1, until)
        if b1 <= b0:
            continue
        # stacked in thin lanes at the top, so overlapping rules stay apart
        lane = top_pad + (i % 4) * 6
        out.append(
            f'<rect x="{x(b0):.1f}" y="{lane}" width="{max(x(b1) - x(b0), 1.5):.1f}" '
            f'height="{height - bottom - lane}" class="band {escape(cls)}">'
            f"<title>{escape(label)}</title></rect>"
        )
    bar_w = max(plot_w * step.total_seconds() / span - 1, 1)
    for when, v in points:
        if when < since or when >= until:
            continue
        h = plot_h * v / peak
        label = when.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        out.append(
            f'<rect x="{x(when):.1f}" y="{height - bottom - h:.1f}" width="{bar_w:.1f}" '
            f'height="{h:.1f}" class="bar"><title>{escape(label)}: '
            f"{escape(human(v, unit))}</title></rect>"
        )
    for when, label, cls in marks:
        if since <= when <= until:
            xm = x(when)
            out.append(
                f'<line x1="{xm:.1f}" y1="{top_pad}" x2="{xm:.1f}" y2="{height - bottom}" '
                f'class="mark {escape(cls)}"><title>{escape(label)}</title></line>'
            )
    out.append("</svg>")
    return _safe("".join(out))


def dots(
    rows: Sequence[tuple[str, Sequence[datetime]]],
    *,
    title: str,
    since: datetime,
    until: datetime,
    zone: str = "UTC",
    width: int = 900,
) -> Markup:
    """One row of marks per label on a true time axis (who made contact, and when)."""
    if not rows:
        return _safe(f'<p class="empty">{escape(title)}: no data</p>')
    left, right, row_h, top_pad = 80, 10, 16, 24
    height = top_pad + row_h * len(rows) + 30
    span = max((until - since).total_seconds(), 1.0)
    plot_w = width - left - right
    tz = ZoneInfo(zone)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{left}" y="14" class="title">{escape(title)}</text>',
    ]
    for i, (label, times) in enumerate(rows):
        y = top_pad + i * row_h + row_h / 2
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
            f"{escape(label)}</text>"
        )
        for t in times:
            x = left + plot_w * (t - since).total_seconds() / span
            out.append(f'<rect x="{x:.1f}" y="{y - 5:.1f}" width="2" height="10" class="bar"/>')
    base = top_pad + row_h * len(rows) + 4
    for frac in (0.0, 0.5, 1.0):
        t = since + (until - since) * frac
        out.append(
            f'<text x="{left + plot_w * frac:.1f}" y="{base + 14}" '
            f'text-anchor="{"start" if frac == 0 else "end" if frac == 1 else "middle"}" '
            f'class="axis">{escape(t.astimezone(tz).strftime("%m-%d %H:%M %Z"))}</text>'
        )
    out.append("</svg>")
    return _safe("".join(out))


def histogram(
    values: Sequence[float], *, title: str, bins: int = 30, unit: str = "s", width: int = 600
) -> Markup:
    """How often each size of value occurs (e.g. seconds between contacts: a beacon is a spike)."""
    if not values:
        return _safe(f'<p class="empty">{escape(title)}: no data</p>')
    lo, hi = min(values), max(values)
    if hi <= lo:
        hi = lo + 1
    step = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / step), bins - 1)] += 1
    points = [
        (f"{lo + i * step:.0f}–{lo + (i + 1) * step:.0f} {unit}", c) for i, c in enumerate(counts)
    ]
    return bars(points, title=title, width=width, height=200)

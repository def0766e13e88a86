"""The Recommendations page as server-rendered HTML (a Jinja2 template, autoescaped) and its small KPI chart (SVG).

The page lives in an iframe of the Airflow UI (an external view), so Airflow gives the navigation, the login and the
layout around it; the template only follows Airflow's look: the UI's colour mode (read from the parent window, same
origin) and the brand colour of ``[api] theme`` when one is configured.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import escape

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: The chart's metric and size.
CHART_METRIC = "hit_rate_at_10"
CHART_W, CHART_H, CHART_PAD = 320, 120, 24
ARM_COLOURS = {"control": "var(--brand)", "treatment": "#d97706"}


@functools.lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.filters["num"] = _num
    env.filters["dwell"] = _dwell
    return env


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _dwell(ms: int | None) -> str:
    if ms is None:
        return "—"
    return f"{ms / 1000:.1f} s" if ms < 60_000 else f"{ms / 60_000:.1f} min"


def brand_colour() -> str | None:
    """Shade 600 of the ``brand`` colour in ``[api] theme`` (Airflow's own setting), when one is set."""
    try:
        from airflow.configuration import conf

        theme = json.loads(conf.get("api", "theme", fallback="") or "{}")
        return theme["tokens"]["colors"]["brand"]["600"]["value"]
    except (ImportError, ValueError, KeyError, TypeError):
        return None


def chart(series: dict[str, list[dict[str, Any]]]) -> str | None:
    """An SVG line per arm of ``hit_rate_at_10`` over the measured days (None without at least one point)."""
    days = sorted({p["dt"] for points in series.values() for p in points})
    values = [p[CHART_METRIC] for points in series.values() for p in points if p.get(CHART_METRIC) is not None]
    if not days or not values:
        return None
    top = max(values) or 1.0
    x_step = (CHART_W - 2 * CHART_PAD) / max(len(days) - 1, 1)

    def xy(point: dict[str, Any]) -> str:
        x = CHART_PAD + days.index(point["dt"]) * x_step
        y = CHART_H - CHART_PAD - (point[CHART_METRIC] / top) * (CHART_H - 2 * CHART_PAD)
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<svg class="chart" role="img" aria-label="{CHART_METRIC} per arm over the last {len(days)} measured days" '
        f'viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" height="{CHART_H}">',
        f'<line x1="{CHART_PAD}" y1="{CHART_H - CHART_PAD}" x2="{CHART_W - CHART_PAD}" y2="{CHART_H - CHART_PAD}" '
        'class="axis"/>',
        f'<text x="{CHART_PAD}" y="{CHART_H - 6}" class="tick">{escape(days[0])}</text>',
        f'<text x="{CHART_W - CHART_PAD}" y="{CHART_H - 6}" class="tick" text-anchor="end">{escape(days[-1])}</text>',
        f'<text x="{CHART_PAD}" y="14" class="tick">max {top:.3f}</text>',
    ]
    for arm, points in sorted(series.items()):
        shown = [p for p in points if p.get(CHART_METRIC) is not None]
        colour = ARM_COLOURS.get(arm, "currentColor")
        coords = " ".join(xy(p) for p in shown)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2" data-arm="{escape(arm)}"/>'
        )
        for p in shown:
            x, y = xy(p).split(",")
            parts.append(
                f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"><title>{escape(arm)} {p["dt"]}: '
                f"{p[CHART_METRIC]:.4f}</title></circle>"
            )
    for i, arm in enumerate(sorted(series)):
        x = CHART_W - CHART_PAD - 80 * (len(series) - 1 - i)
        parts.append(
            f'<text x="{x}" y="14" class="tick" text-anchor="end" style="fill: {ARM_COLOURS.get(arm, "currentColor")}">'
            f"— {escape(arm)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render(context: dict[str, Any]) -> str:
    summary = context.get("summary") or {}
    kpis = summary.get("kpis") or {}
    context = {**context, "chart": chart(kpis.get("series") or {}), "brand": brand_colour()}
    return _env().get_template("recommendations.html").render(**context)

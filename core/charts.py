"""The data behind every chart: what ``templates/partials/_chart.html`` renders.

Selectors return these plain dicts; the partial hands one to the browser with
``json_script`` and ``static/js/charts.js`` draws it with the vendored
Chart.js (axes, titles with units, hover values). No geometry is computed in
Python: scaling and layout are the chart library's job.

Point shapes per ``kind``:

- ``line``: ``[x, y]`` with numeric x (e.g. a training step);
- ``bar``: ``[category, y]`` (e.g. a day);
- ``interval``: ``[category, value, lower, upper]``, drawn as a horizontal
  whisker from lower to upper with a dot at value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, NotRequired, TypedDict

Kind = Literal["line", "bar", "interval"]


class Axis(TypedDict):
    label: str
    unit: str  # "" for a quantity without one
    min: NotRequired[float]
    max: NotRequired[float]


class Series(TypedDict):
    label: str
    key: str  # what live updates name this series by (a metric name)
    points: list[list[Any]]


class Chart(TypedDict):
    id: str
    title: str
    kind: Kind
    x: Axis
    y: Axis
    series: list[Series]


def axis(
    label: str, unit: str = "", *, lo: float | None = None, hi: float | None = None
) -> Axis:
    out = Axis(label=label, unit=unit)
    if lo is not None:
        out["min"] = lo
    if hi is not None:
        out["max"] = hi
    return out


def series(*, label: str, points: Sequence[Sequence[Any]], key: str = "") -> Series:
    """A series, without the points the browser cannot parse as JSON (NaN, inf)."""
    return Series(
        label=label,
        key=key or label,
        points=[list(p) for p in points if _finite(p)],
    )


def chart(
    *, id: str, title: str, kind: Kind, x: Axis, y: Axis, series: Sequence[Series]
) -> Chart:
    return Chart(id=id, title=title, kind=kind, x=x, y=y, series=list(series))


def chart_has_points(c: Chart) -> bool:
    return any(s["points"] for s in c["series"])


def _finite(point: Sequence[Any]) -> bool:
    return all(not isinstance(v, float) or math.isfinite(v) for v in point)

"""Small inline SVG drawn on the server: the events-per-minute chart and the lineage diagram.

No JavaScript and no chart library: the page stays readable with scripts off and costs
nothing to render on a phone.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from tidemark.observe.lineage import Lineage, Node


def sparkline(values: Sequence[float], *, width: int = 180, height: int = 36) -> Markup:
    """A filled line of `values` (oldest first), scaled to its maximum, with that maximum as
    a per-second figure in its title."""
    if not values:
        return Markup("")
    peak = max(values) or 1.0
    step = width / max(len(values) - 1, 1)
    points = [
        (round(i * step, 1), round(height - 2 - (v / peak) * (height - 4), 1))
        for i, v in enumerate(values)
    ]
    line = " ".join(f"{x},{y}" for x, y in points)
    area = f"0,{height} {line} {width},{height}"
    title = f"events per minute over the last hour; peak {max(values) / 60:,.1f} events/s"
    return Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<polygon points="{area}" class="spark-area"/>'
        f'<polyline points="{line}" class="spark-line"/></svg>'
    )


_COLUMNS = {"source": 0, "topic": 1, "layer": 2, "gold": 3}
_BOX_W, _BOX_H, _GAP_X, _GAP_Y = 190, 28, 60, 10


def lineage_svg(graph: Lineage) -> Markup:
    """Columns left to right (sources, topics, layers, gold models), boxes linking to their
    table pages, and a curve for every edge."""
    columns = [
        c for c in ("source", "topic", "layer", "gold") if any(n.kind == c for n in graph.nodes)
    ]
    x_of = {kind: i * (_BOX_W + _GAP_X) for i, kind in enumerate(columns)}
    rows: dict[str, int] = {}
    place: dict[str, tuple[float, float]] = {}
    for node in graph.nodes:
        row = rows.get(node.kind, 0)
        rows[node.kind] = row + 1
        place[node.id] = (x_of[node.kind], row * (_BOX_H + _GAP_Y))
    # Centre shorter columns against the tallest one.
    tallest = max(rows.values(), default=1)
    for node in graph.nodes:
        x, y = place[node.id]
        offset = (tallest - rows[node.kind]) * (_BOX_H + _GAP_Y) / 2
        place[node.id] = (x, y + offset)
    width = len(columns) * (_BOX_W + _GAP_X) - _GAP_X
    height = tallest * (_BOX_H + _GAP_Y)
    parts = [
        f'<svg class="lineage" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="lineage diagram">'
    ]
    for edge in graph.edges:
        if edge.source not in place or edge.target not in place:
            continue
        (x1, y1), (x2, y2) = place[edge.source], place[edge.target]
        x1, y1, y2 = x1 + _BOX_W, y1 + _BOX_H / 2, y2 + _BOX_H / 2
        middle = (x1 + x2) / 2
        parts.append(f'<path class="edge" d="M{x1},{y1} C{middle},{y1} {middle},{y2} {x2},{y2}"/>')
    for node in graph.nodes:
        parts.append(_box(node, *place[node.id]))
    parts.append("</svg>")
    return Markup("".join(parts))


def _box(node: Node, x: float, y: float) -> str:
    css = f"node node-{node.kind}" + ("" if node.exists else " node-missing")
    label = escape(node.label)
    body = (
        f'<g class="{css}" id="{escape(node.id)}"><rect x="{x}" y="{y}" width="{_BOX_W}" '
        f'height="{_BOX_H}" rx="5"/><text x="{x + 8}" y="{y + _BOX_H / 2 + 4}">{label}'
        f"<title>{label}</title></text></g>"
    )
    if node.href:
        return f'<a href="{escape(node.href)}">{body}</a>'
    return body

"""Topology picture: a layered (Sugiyama-style) layout of the blueprint DAG, emitted as standalone SVG."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

from blueprints.analysis import sizing
from blueprints.analysis.plan import topological_order

NODE_H = 62
MIN_NODE_W = 176
H_GAP = 36
V_GAP = 70
MARGIN = 24
CHAR_W = 7.6  # average glyph width of the 13px bold sans-serif used for names

# type -> (fill, stroke, label)
TYPE_STYLES: dict[str, tuple[str, str, str]] = {
    "loadbalancer": ("#fff3e0", "#fb8c00", "load balancer"),
    "compute": ("#e3f2fd", "#1e88e5", "compute"),
    "container": ("#e0f7fa", "#00acc1", "container"),
    "database": ("#ede7f6", "#5e35b1", "database"),
    "cache": ("#fce4ec", "#d81b60", "cache"),
    "volume": ("#efebe9", "#6d4c41", "volume"),
    "network": ("#f1f8e9", "#7cb342", "network"),
    "kubernetes_cluster": ("#e8eaf6", "#3949ab", "kubernetes cluster"),
}
EDGE_STYLES = {
    "dependency": ("#607d8b", "", "depends on"),
    "target": ("#fb8c00", "6 4", "load balancer target"),
    "network": ("#7cb342", "2 4", "attached to network"),
}


def _subtitle(res: dict[str, Any]) -> str:
    specs = res.get("specs") or {}
    parts = [TYPE_STYLES[res["type"]][2]]
    if specs.get("engine"):
        parts.append(f"{specs['engine']} {specs.get('engine_version', '')}".strip())
    elif specs.get("image"):
        parts.append(specs["image"].rsplit("/", 1)[-1][:28])
    if specs.get("cpu"):
        parts.append(f"{specs['cpu']:g} vCPU")
    if specs.get("memory"):
        parts.append(specs["memory"])
    if res["type"] in ("volume",) and specs.get("storage"):
        parts.append(specs["storage"])
    if res["type"] == "network" and specs.get("cidr"):
        parts.append(specs["cidr"])
    return " · ".join(parts)


def _edges(document: dict[str, Any], names: set[str]) -> list[tuple[str, str, str]]:
    """(from, to, kind): from the dependent to what it needs."""
    edges = []
    for res in document.get("resources") or []:
        name = res["name"]
        specs = res.get("specs") or {}
        targets = specs.get("targets") or []
        for dep in res.get("depends_on") or []:
            if dep in names and dep not in targets:
                edges.append((name, dep, "dependency"))
        for target in targets:
            if target in names:
                edges.append((name, target, "target"))
        if res.get("network") in names:
            edges.append((name, res["network"], "network"))
    return list(dict.fromkeys(edges))


def _layers(names: list[str], edges: list[tuple[str, str, str]]) -> dict[str, int]:
    """Longest-path layering: what nothing depends on sits at layer 0 (top); dependencies go below it."""
    deps: dict[str, list[str]] = {name: [] for name in names}
    for src, dst, _kind in edges:
        deps[src].append(dst)
    order = topological_order(names, deps) or names  # an invalid (cyclic) document still gets a picture
    height: dict[str, int] = {}
    for name in order:
        height[name] = 1 + max((height.get(dep, 0) for dep in deps[name]), default=-1)
    top = max(height.values(), default=0)
    return {name: top - h for name, h in height.items()}


def _barycenter_sort(row: list[str], ref: list[str], neighbours: dict[str, list[str]]) -> list[str]:
    """Order a layer by the mean position of each node's neighbours in the adjacent layer (stable for ties)."""
    pos = {name: j for j, name in enumerate(ref)}
    current = {name: j for j, name in enumerate(row)}

    def key(name: str) -> tuple[float, int]:
        linked = [pos[n] for n in neighbours[name] if n in pos]
        return (sum(linked) / len(linked) if linked else current[name], current[name])

    return sorted(row, key=key)


def _order_layers(layer_of: dict[str, int], names: list[str], edges: list[tuple[str, str, str]]) -> list[list[str]]:
    """Barycenter heuristic: a few down and up sweeps to reduce crossings (deterministic)."""
    count = max(layer_of.values(), default=-1) + 1
    layers: list[list[str]] = [[] for _ in range(count)]
    for name in names:
        layers[layer_of[name]].append(name)
    up: dict[str, list[str]] = {name: [] for name in names}
    down: dict[str, list[str]] = {name: [] for name in names}
    for src, dst, _kind in edges:
        down[src].append(dst)
        up[dst].append(src)
    for _ in range(4):
        for i in range(1, count):
            layers[i] = _barycenter_sort(layers[i], layers[i - 1], up)
        for i in range(count - 2, -1, -1):
            layers[i] = _barycenter_sort(layers[i], layers[i + 1], down)
    return layers


def render_svg(document: dict[str, Any]) -> str:
    """A standalone SVG of the blueprint: nodes styled by type with counts, dependency and target edges, a legend."""
    resources = [res for res in document.get("resources") or [] if res.get("type") in TYPE_STYLES]
    names = [res["name"] for res in resources]
    by_name = {res["name"]: res for res in resources}
    edges = _edges(document, set(names))
    layers = _order_layers(_layers(names, edges), names, edges)

    width_of = {name: max(MIN_NODE_W, int(len(name) * CHAR_W) + 56) for name in names}
    row_widths = [sum(width_of[n] for n in row) + H_GAP * max(len(row) - 1, 0) for row in layers]
    canvas_w = max([*row_widths, 420]) + 2 * MARGIN
    pos: dict[str, tuple[float, float]] = {}
    for i, row in enumerate(layers):
        x = MARGIN + (canvas_w - 2 * MARGIN - row_widths[i]) / 2
        y = MARGIN + 30 + i * (NODE_H + V_GAP)
        for name in row:
            pos[name] = (x, y)
            x += width_of[name] + H_GAP
    legend_y = MARGIN + 30 + len(layers) * (NODE_H + V_GAP)
    canvas_h = legend_y + 70

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{canvas_w:.0f}" height="{canvas_h:.0f}" '
        f'viewBox="0 0 {canvas_w:.0f} {canvas_h:.0f}" role="img" font-family="Helvetica, Arial, sans-serif">',
        f"<title>{escape(str(document.get('name', 'blueprint')))} topology</title>",
        "<defs>",
    ]
    for kind, (color, _dash, _label) in EDGE_STYLES.items():
        out.append(
            f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{color}"/></marker>'
        )
    out.append("</defs>")
    env = escape(sizing.environment_of(document))
    out.append(
        f'<text x="{MARGIN}" y="{MARGIN + 8}" font-size="15" font-weight="bold" fill="#263238">'
        f"{escape(str(document.get('name', '')))} <tspan font-weight="
        f'"normal" fill="#607d8b">({env}, {len(names)} resources)</tspan></text>'
    )

    out.append('<g class="edges" fill="none" stroke-width="1.6">')
    for src, dst, kind in edges:
        color, dash, _label = EDGE_STYLES[kind]
        (sx, sy), (dx, dy) = pos[src], pos[dst]
        x1, x2 = sx + width_of[src] / 2, dx + width_of[dst] / 2
        if dy > sy:  # dependency below: bottom of the dependent to the top of the dependency
            y1, y2 = sy + NODE_H, dy
        elif dy < sy:
            y1, y2 = sy, dy + NODE_H
        else:  # same layer (only in a cyclic document): a side arc
            y1 = y2 = sy + NODE_H
        mid = (y1 + y2) / 2 if y1 != y2 else y1 + V_GAP / 2
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<path class="edge edge-{kind}" data-from={quoteattr(src)} data-to={quoteattr(dst)} '
            f'stroke="{color}"{dash_attr} '
            f'd="M {x1:.1f} {y1:.1f} C {x1:.1f} {mid:.1f} {x2:.1f} {mid:.1f} {x2:.1f} {y2:.1f}" '
            f'marker-end="url(#arrow-{kind})"/>'
        )
    out.append("</g>")

    out.append('<g class="nodes">')
    for name in names:
        res = by_name[name]
        fill, stroke, _label = TYPE_STYLES[res["type"]]
        x, y = pos[name]
        w = width_of[name]
        rx = 18 if res["type"] in ("database", "cache") else 6
        dash = ' stroke-dasharray="5 3"' if res["type"] == "network" else ""
        out.append(f'<g class="node node-{res["type"]}" data-name={quoteattr(name)}>')
        out.append(f"<title>{escape(name)} ({escape(res['type'])})</title>")
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w}" height="{NODE_H}" rx="{rx}" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="2"{dash}/>'
        )
        out.append(
            f'<text x="{x + 12:.1f}" y="{y + 24:.1f}" font-size="13" font-weight="bold" fill="#263238">'
            f"{escape(name)}</text>"
        )
        out.append(
            f'<text x="{x + 12:.1f}" y="{y + 44:.1f}" font-size="11" fill="#455a64">{escape(_subtitle(res))}</text>'
        )
        copies = sizing.instances(res)
        if copies > 1:
            out.append(
                f'<g class="count"><rect x="{x + w - 42:.1f}" y="{y - 10:.1f}" width="36" height="20" rx="10" '
                f'fill="{stroke}"/><text x="{x + w - 24:.1f}" y="{y + 4:.1f}" font-size="12" font-weight="bold" '
                f'fill="#ffffff" text-anchor="middle">\u00d7{copies}</text></g>'
            )
        if (res.get("specs") or {}).get("exposure") == "public":
            out.append(
                f'<text x="{x + w - 12:.1f}" y="{y + 44:.1f}" font-size="10" fill="#c62828" text-anchor="end">'
                "public</text>"
            )
        out.append("</g>")
    out.append("</g>")

    out.append(f'<g class="legend" font-size="11" fill="#455a64" transform="translate({MARGIN},{legend_y:.0f})">')
    x = 0
    for rtype in dict.fromkeys(res["type"] for res in resources):
        fill, stroke, label = TYPE_STYLES[rtype]
        out.append(f'<rect x="{x}" y="0" width="14" height="14" rx="3" fill="{fill}" stroke="{stroke}"/>')
        out.append(f'<text x="{x + 19}" y="11">{escape(label)}</text>')
        x += 30 + int(len(label) * 6.2)
    x = 0
    for kind in dict.fromkeys(kind for _s, _d, kind in edges):
        color, dash, label = EDGE_STYLES[kind]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{x}" y1="33" x2="{x + 26}" y2="33" stroke="{color}" stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{x + 32}" y="37">{escape(label)}</text>')
        x += 46 + int(len(label) * 6.2)
    out.append("</g></svg>")
    return "\n".join(out)

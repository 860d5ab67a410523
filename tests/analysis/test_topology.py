"""Topology SVG: well-formed XML naming every resource, styled by type, with dependency and target edges."""

from __future__ import annotations

from typing import Any

import pytest

from blueprints.analysis import list_templates, render_svg, render_template
from tests.analysis.conftest import bp, parse_svg, res, web_stack

SVG = "{http://www.w3.org/2000/svg}"


def texts(root: Any) -> list[str]:
    return ["".join(el.itertext()) for el in root.iter(f"{SVG}text")]


def test_svg_parses_and_names_every_resource() -> None:
    svg = render_svg(web_stack())
    root = parse_svg(svg)
    assert root.tag == f"{SVG}svg"
    names = set(texts(root))
    for name in ("net", "db", "web", "lb"):
        assert name in names


def test_nodes_are_styled_by_type_and_show_counts() -> None:
    root = parse_svg(render_svg(web_stack()))
    groups = {g.get("data-name"): g for g in root.iter(f"{SVG}g") if g.get("data-name")}
    assert groups["db"].get("class") == "node node-database"
    assert groups["lb"].get("class") == "node node-loadbalancer"
    fills = {name: g.find(f"{SVG}rect").get("fill") for name, g in groups.items()}
    assert len(set(fills.values())) == 4
    assert "\u00d72" in texts(root)  # web has count 2
    assert not any(t.startswith("\u00d7") for t in ["".join(groups["db"].itertext())])


def test_edges_cover_dependencies_targets_and_networks() -> None:
    root = parse_svg(render_svg(web_stack()))
    edges = {
        (p.get("data-from"), p.get("data-to"), p.get("class")) for p in root.iter(f"{SVG}path") if p.get("data-from")
    }
    assert ("web", "db", "edge edge-dependency") in edges
    assert ("lb", "web", "edge edge-target") in edges
    assert ("db", "net", "edge edge-network") in edges


def test_dependents_are_drawn_above_their_dependencies() -> None:
    root = parse_svg(render_svg(web_stack()))
    y = {g.get("data-name"): float(g.find(f"{SVG}rect").get("y")) for g in root.iter(f"{SVG}g") if g.get("data-name")}
    assert y["lb"] < y["web"] < y["db"] < y["net"]


def test_counts_for_replicas() -> None:
    document = bp(res("api", "container", {"replicas": 3}), res("k", "kubernetes_cluster", {"nodes": 5}))
    assert {"\u00d73", "\u00d75"} <= set(texts(parse_svg(render_svg(document))))


@pytest.mark.parametrize("template_id", [t["id"] for t in list_templates()])
def test_every_template_renders(template_id: str) -> None:
    document = render_template(template_id, {})
    root = parse_svg(render_svg(document))
    shown = set(texts(root))
    assert {r["name"] for r in document["resources"]} <= shown


def test_cyclic_document_still_renders() -> None:
    document = bp(res("a", "compute", depends_on=["b"]), res("b", "compute", depends_on=["a"]))
    assert {"a", "b"} <= set(texts(parse_svg(render_svg(document))))

"""Blueprint analysis: plan, cost, optimisation, security audit, topology picture and the template catalog.

Everything exported here works on plain documents; the only database read is the admin's active price book when
`price_book` is None (see docs/analysis.md). `blueprints.analysis.services` holds the versions-and-users layer.
"""

from blueprints.analysis.cost import cost_delta, default_price_book, estimate_cost
from blueprints.analysis.optimize import optimize
from blueprints.analysis.plan import DeployedResource, compute_plan
from blueprints.analysis.security import (
    RULES,
    SEVERITIES,
    audit_document,
    rule_catalog,
    severity_at_least,
)
from blueprints.analysis.templates import get_template, list_templates, render_template
from blueprints.analysis.topology import render_svg

__all__ = [
    "RULES",
    "SEVERITIES",
    "DeployedResource",
    "audit_document",
    "compute_plan",
    "cost_delta",
    "default_price_book",
    "estimate_cost",
    "get_template",
    "list_templates",
    "optimize",
    "render_svg",
    "render_template",
    "rule_catalog",
    "severity_at_least",
]

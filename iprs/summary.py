"""A plain-language account of an IPR, built deterministically from its structured diff, cost delta and findings."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

TOP_RISKS = 3
_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}


def _names(items: list[dict[str, Any]]) -> str:
    parts = [f"{item['name']} ({item['type']})" for item in items]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _change_phrase(change: dict[str, Any]) -> str:
    field = change["field"]
    if change["kind"] == "added":
        return f"{field} set to {_value(change['new'])}"
    if change["kind"] == "removed":
        return f"{field} removed (was {_value(change['old'])})"
    return f"{field} {_value(change['old'])} → {_value(change['new'])}"


def _money(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)).quantize(Decimal("0.01")) if value is not None else None
    except InvalidOperation:
        return None


def cost_sentence(delta: dict[str, Any]) -> str:
    change, old, new = _money(delta.get("delta")), _money(delta.get("old_total")), _money(delta.get("new_total"))
    if change is None or new is None:
        return "The monthly cost could not be estimated."
    cur = delta.get("currency") or "USD"
    percent = delta.get("delta_percent")
    pct = f", {float(percent):+.1f}%" if isinstance(percent, int | float) else ""
    if change > 0:
        return f"Monthly cost rises by {change:,} {cur} (from {old or 0:,} to {new:,} {cur}{pct})."
    if change < 0:
        return f"Monthly cost falls by {-change:,} {cur} (from {old or 0:,} to {new:,} {cur}{pct})."
    return f"Monthly cost stays at {new:,} {cur}."


def top_risks(findings: list[dict[str, Any]], limit: int = TOP_RISKS) -> list[dict[str, Any]]:
    ordered = sorted(
        findings, key=lambda f: (_SEVERITY_ORDER.get(f.get("severity", ""), 9), f.get("resource") or "", f["rule_id"])
    )
    return ordered[:limit]


def plain_summary(diff: dict[str, Any], cost_delta: dict[str, Any], findings: list[dict[str, Any]]) -> list[str]:
    """Sentences, in a fixed order: added, changed, removed, cost, risks. Same input, same words."""
    sentences: list[str] = []
    added, changed, removed = diff.get("added", []), diff.get("changed", []), diff.get("removed", [])
    if not (added or changed or removed or diff.get("blueprint")):
        sentences.append("No resources change.")
    if added:
        sentences.append(f"Adds {_plural(len(added), 'resource')}: {_names(added)}.")
    for item in changed:
        phrases = [_change_phrase(c) for c in item.get("changes", [])]
        shown = "; ".join(phrases[:4]) + (f"; and {len(phrases) - 4} more" if len(phrases) > 4 else "")
        sentences.append(f"Changes {item['name']} ({item['type']}): {shown}.")
    if removed:
        sentences.append(f"Removes {_plural(len(removed), 'resource')}: {_names(removed)}.")
    if diff.get("blueprint"):
        sentences.append("Blueprint settings change: " + "; ".join(_change_phrase(c) for c in diff["blueprint"]) + ".")
    sentences.append(cost_sentence(cost_delta or {}))
    risks = top_risks(findings)
    if not risks:
        sentences.append("The security audit found no risks.")
    else:
        listed = "; ".join(
            f"{r['severity']}: {r['title']}" + (f" ({r['resource']})" if r.get("resource") else "") for r in risks
        )
        more = f" ({len(findings) - len(risks)} more)" if len(findings) > len(risks) else ""
        sentences.append(f"Top risks: {listed}{more}.")
    return sentences

"""What reviewers judge, computed once per (version, base): the plan, the cost and its delta, the findings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder


def _jsonable(value: Any) -> Any:
    # Analysis results may carry Decimals and tuples; JSONField needs plain JSON.
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def deployed_resources(environment: Any, state: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """The environment's recorded resource state (or `state`, in its shape) as analysis.DeployedResource objects."""
    from blueprints.analysis import DeployedResource
    from engines.selectors import deployed_state

    if state is None:
        state = deployed_state(environment)
    return {
        name: DeployedResource(
            name=item["name"],
            type=item["type"],
            spec=item.get("spec", {}),
            status=item.get("status", "ready"),
            outputs=item.get("outputs", {}),
        )
        for name, item in state.items()
    }


def compute_snapshots(
    *, user: Any, version: Any, base_version: Any, environment: Any, state: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """{"plan", "cost", "findings"} for turning `environment` (at `base_version`) into `version`; the plan diffs
    against the recorded state, or against `state` (a reconcile plans from the recorded state as drift corrects it)."""
    from blueprints import analysis
    from blueprints.analysis.services import version_security_audit

    document = version.document
    plan = analysis.compute_plan(document, deployed_resources(environment, state))
    cost = {
        "estimate": analysis.estimate_cost(document),
        "delta": analysis.cost_delta(base_version.document if base_version is not None else None, document),
    }
    # The blueprint's recorded suppressions apply; the user is the one asking, so visibility rules hold.
    findings = version_security_audit(user=user, ref=version.pk)
    return {"plan": _jsonable(plan), "cost": _jsonable(cost), "findings": _jsonable(findings)}

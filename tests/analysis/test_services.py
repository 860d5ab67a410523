"""Analysis services on stored versions: access through selectors, suppressions (audited), saves, price books."""

from __future__ import annotations

import copy

import pytest

from aicdn_project.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from aicdn_project.models import AuditEvent
from blueprints.analysis import DeployedResource
from blueprints.analysis import services as analysis
from blueprints.models import BlueprintVersion, PriceBook, SecuritySuppression
from blueprints.services import blueprint_create, blueprint_version_create
from tests.analysis.conftest import bp, res

pytestmark = pytest.mark.django_db


def public_db_blueprint(owner):  # type: ignore[no-untyped-def]
    document = bp(res("db", "database", {"engine": "postgresql", "engine_version": "16", "exposure": "public"}))
    document["name"] = "exposed"
    return blueprint_create(owner=owner, document=document)


def test_version_cost_by_id_and_commit(owner, stored) -> None:  # type: ignore[no-untyped-def]
    by_id = analysis.version_cost(user=owner, ref=stored.pk)
    by_commit = analysis.version_cost(user=owner, ref=stored.commit_id)
    assert by_id["monthly_total"] == by_commit["monthly_total"] > 0
    assert by_id["version"]["commit_id"] == stored.commit_id


def test_other_requesters_cannot_read(stranger, stored) -> None:  # type: ignore[no-untyped-def]
    for call in (analysis.version_cost, analysis.version_security_audit, analysis.version_plan):
        with pytest.raises(NotFound):
            call(user=stranger, ref=stored.pk)
    with pytest.raises(NotFound):
        analysis.optimize_costs(user=stranger, blueprint_id=stored.blueprint_id, target_reduction=0.3)


def test_reviewer_reads_any_version(reviewer_user, stored) -> None:  # type: ignore[no-untyped-def]
    assert analysis.version_security_audit(user=reviewer_user, ref=stored.pk)["version"]["id"] == stored.pk
    assert analysis.version_topology_svg(user=reviewer_user, ref=stored.pk).startswith("<svg")


def test_cost_delta_against_parent_and_explicit(owner, stored) -> None:  # type: ignore[no-untyped-def]
    first = analysis.version_cost_delta(user=owner, to_ref=stored.pk)
    assert first["from"] is None and first["old_total"] == 0
    document = copy.deepcopy(stored.document)
    document["resources"][2]["count"] = 3
    second, _ = blueprint_version_create(blueprint_id=stored.blueprint_id, author=owner, document=document)
    delta = analysis.version_cost_delta(user=owner, to_ref=second.commit_id)
    assert delta["from"]["id"] == stored.pk and delta["delta"] > 0
    reverse = analysis.version_cost_delta(user=owner, to_ref=stored.pk, from_ref=second.pk)
    assert reverse["delta"] == -delta["delta"]


def test_plan_against_recorded_state(owner, stored) -> None:  # type: ignore[no-untyped-def]
    assert analysis.version_plan(user=owner, ref=stored.pk)["counts"]["create"] == 4
    state = {
        r["name"]: DeployedResource(name=r["name"], type=r["type"], spec=copy.deepcopy(r))
        for r in stored.document["resources"]
    }
    state["old-vm"] = DeployedResource(name="old-vm", type="compute", spec={"name": "old-vm", "type": "compute"})
    plan = analysis.version_plan(user=owner, ref=stored.pk, deployed=state)
    assert plan["summary"] == "0 to add, 0 to change, 1 to destroy"


def test_suppression_applies_and_is_audited(owner) -> None:  # type: ignore[no-untyped-def]
    version = public_db_blueprint(owner)
    before = analysis.version_security_audit(user=owner, ref=version.pk)
    assert "AICDN-SEC-001" in {f["rule_id"] for f in before["findings"]} and before["passed"] is False
    events = AuditEvent.objects.count()
    created = analysis.suppression_create(
        user=owner,
        blueprint_id=version.blueprint_id,
        rule_id="aicdn-sec-001",
        justification="isolated lab network, no real data",
        resource="db",
    )
    assert created["rule_id"] == "AICDN-SEC-001" and created["created_by"] == owner.username
    event = AuditEvent.objects.order_by("-seq").first()
    assert AuditEvent.objects.count() == events + 1
    assert event.action == "blueprint.finding_suppressed" and event.after["rule_id"] == "AICDN-SEC-001"
    after = analysis.version_security_audit(user=owner, ref=version.pk)
    assert "AICDN-SEC-001" not in {f["rule_id"] for f in after["findings"]}
    assert after["suppressed"][0]["justification"] == "isolated lab network, no real data"
    assert analysis.security_audit(user=owner, blueprint_id=version.blueprint_id)["suppressed"]
    assert analysis.suppression_list(user=owner, blueprint_id=version.blueprint_id)[0]["resource"] == "db"


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"rule_id": "AICDN-SEC-999", "justification": "long enough reason"}, "$.rule_id"),
        ({"rule_id": "AICDN-SEC-001", "justification": "   "}, "$.justification"),
        ({"rule_id": "AICDN-SEC-001", "justification": "too short"}, "$.justification"),
        ({"rule_id": "AICDN-SEC-001", "justification": "long enough reason", "resource": "Bad Name"}, "$.resource"),
        ({"rule_id": "AICDN-SEC-001", "justification": "long enough reason", "path": "resources"}, "$.path"),
    ],
)
def test_suppression_input_is_checked(owner, kwargs, path) -> None:  # type: ignore[no-untyped-def]
    version = public_db_blueprint(owner)
    with pytest.raises(ValidationFailed) as info:
        analysis.suppression_create(user=owner, blueprint_id=version.blueprint_id, **kwargs)
    assert info.value.details["errors"][0]["path"] == path
    assert SecuritySuppression.objects.count() == 0


def test_suppression_permissions_and_duplicates(owner, stranger, reviewer_user, admin) -> None:  # type: ignore[no-untyped-def]
    version = public_db_blueprint(owner)
    args = {"blueprint_id": version.blueprint_id, "rule_id": "AICDN-SEC-001", "justification": "accepted by CISO"}
    with pytest.raises(NotFound):
        analysis.suppression_create(user=stranger, **args)
    with pytest.raises(PermissionDenied):
        analysis.suppression_create(user=reviewer_user, **args)
    analysis.suppression_create(user=admin, **args)
    with pytest.raises(Conflict):
        analysis.suppression_create(user=owner, **args)
    assert SecuritySuppression.objects.get().created_by == admin


def test_optimize_costs_save_creates_a_version(owner) -> None:  # type: ignore[no-untyped-def]
    from blueprints.analysis import render_template

    document = render_template("data-pipeline", {"environment": "development"})
    version = blueprint_create(owner=owner, document=document)
    preview = analysis.optimize_costs(user=owner, blueprint_id=version.blueprint_id, target_reduction=0.3)
    assert preview["version"] is None and preview["target_reached"] is True
    assert BlueprintVersion.objects.filter(blueprint_id=version.blueprint_id).count() == 1
    saved = analysis.optimize_costs(user=owner, blueprint_id=version.blueprint_id, target_reduction=0.3, save=True)
    new = BlueprintVersion.objects.get(pk=saved["version"]["id"])
    assert new.parent_id == version.pk and new.blueprint.head_id == new.pk
    assert "cost optimisation" in new.message
    assert new.document == saved["optimized_document"]


def test_optimize_costs_save_refuses_when_nothing_changes(owner) -> None:  # type: ignore[no-untyped-def]
    document = bp(res("net", "network", {"cidr": "10.0.0.0/24"}))
    version = blueprint_create(owner=owner, document=document)
    with pytest.raises(Conflict):
        analysis.optimize_costs(user=owner, blueprint_id=version.blueprint_id, target_reduction=0.3, save=True)


def test_optimize_costs_save_needs_ownership(owner, reviewer_user) -> None:  # type: ignore[no-untyped-def]
    from blueprints.analysis import render_template

    version = blueprint_create(owner=owner, document=render_template("dev-environment", {}))
    assert analysis.optimize_costs(user=reviewer_user, blueprint_id=version.blueprint_id, target_reduction=0.2)
    with pytest.raises(PermissionDenied):
        analysis.optimize_costs(user=reviewer_user, blueprint_id=version.blueprint_id, target_reduction=0.2, save=True)


def test_template_customize_preview_and_save(owner) -> None:  # type: ignore[no-untyped-def]
    preview = analysis.template_customize(user=owner, template_id="ha-web-app", parameters={"instance_count": 4})
    assert preview["version"] is None and preview["parameters"]["instance_count"] == 4
    assert 100 <= preview["monthly_cost"] <= 5000
    saved = analysis.template_customize(
        user=owner, template_id="ha-web-app", parameters={}, save=True, name="shop-frontend"
    )
    version = BlueprintVersion.objects.get(pk=saved["version"]["id"])
    assert version.blueprint.name == "shop-frontend" and version.blueprint.owner == owner
    with pytest.raises(Conflict):
        analysis.template_customize(
            user=owner, template_id="ha-web-app", parameters={}, save=True, name="shop-frontend"
        )
    with pytest.raises(ValidationFailed) as info:
        analysis.template_customize(user=owner, template_id="ha-web-app", parameters={}, name="{{7*7}}")
    assert info.value.details["errors"][0]["path"] == "$.name"


def test_price_book_save_activates_one_and_audits(admin, owner, book) -> None:  # type: ignore[no-untyped-def]
    first = analysis.price_book_save(user=admin, price_book=PriceBook(name="a", data=book, is_active=True))
    second = analysis.price_book_save(
        user=admin, price_book=PriceBook(name="b", data={**book, "version": "b-1"}, is_active=True)
    )
    first.refresh_from_db()
    assert not first.is_active and second.is_active and second.updated_by == admin
    assert analysis.active_price_book()["version"] == "b-1"
    assert AuditEvent.objects.filter(object_type="pricebook").count() == 2
    with pytest.raises(PermissionDenied):
        analysis.price_book_save(user=owner, price_book=PriceBook(name="c", data=book))
    with pytest.raises(ValidationFailed):
        analysis.price_book_save(user=admin, price_book=PriceBook(name="d", data={"version": "x"}))


def test_version_without_head(owner) -> None:  # type: ignore[no-untyped-def]
    from blueprints.models import Blueprint

    empty = Blueprint.objects.create(owner=owner, name="empty")
    with pytest.raises(Conflict):
        analysis.security_audit(user=owner, blueprint_id=empty.pk)

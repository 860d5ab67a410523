"""One conformance suite, run against every engine: simulator, Docker (real dockerd), Proxmox (fakepve), Kubernetes
(kmock). Each check looks at the backend directly, not only at what the engine reports."""

from __future__ import annotations

import pytest

from engines import labels as L
from engines.base import RESOURCE_TYPES, EngineError
from tests.engines.conftest import Harness


def test_capabilities_are_known_types_and_cover_compute(harness: Harness) -> None:
    caps = harness.engine().capabilities()
    assert caps <= RESOURCE_TYPES
    assert "compute" in caps
    if harness.kind == "simulator":
        assert caps == RESOURCE_TYPES
    else:
        assert "kubernetes_cluster" not in caps


def test_unsupported_type_is_a_permanent_error(harness: Harness) -> None:
    engine = harness.engine()
    unsupported = sorted(RESOURCE_TYPES - engine.capabilities())
    if not unsupported:
        # The simulator supports every type: check the same refusal path with a type no schema has.
        unsupported = ["quantum-computer"]
    ctx = harness.ctx()
    with pytest.raises(EngineError) as info:
        engine.create({"name": "odd", "type": unsupported[0], "specs": {}}, ctx)
    assert info.value.permanent is True
    assert harness.backend_objects("odd", ctx) == []


def test_health_ok(harness: Harness) -> None:
    report = harness.engine().health()
    assert report.ok, report.detail
    assert report.detail


def test_health_reports_an_unreachable_backend(harness: Harness) -> None:
    if harness.kind == "simulator":
        engine = harness.engine(healthy=False)
    else:
        engine = harness.engine(**harness.unreachable_config)
    report = engine.health()
    assert report.ok is False
    assert report.detail


def test_create_labels_objects_and_read_finds_them(harness: Harness) -> None:
    engine, ctx = harness.engine(), harness.ctx(deployment_id="dep-create")
    result = engine.create(harness.resource, ctx)
    assert result.name == "web" and result.type == "compute"
    assert result.object_ids
    assert result.adopted is False
    backend = harness.backend_objects("web", ctx)
    assert backend, "the backend holds no object for the resource"
    for _object_id, labels in backend:
        assert labels[L.MANAGED] == "true"
        assert labels[L.ENV] == ctx.environment
        assert labels[L.RESOURCE] == "web"
        assert labels[L.DEPLOYMENT] == "dep-create"
        assert labels[L.SPEC_HASH] == L.spec_hash(harness.resource)
    read = engine.read("web", ctx)
    assert read is not None
    assert read.object_ids == result.object_ids
    assert read.spec_hash == L.spec_hash(harness.resource)
    assert read.deployment_id == "dep-create"
    assert engine.read("nothing-here", ctx) is None


def test_create_applies_cpu_and_memory(harness: Harness) -> None:
    engine, ctx = harness.engine(), harness.ctx()
    engine.create(harness.resource, ctx)
    specs = harness.resource["specs"]
    from blueprints.validation import parse_size

    assert harness.applied_limits(harness.resource, ctx) == [(float(specs["cpu"]), parse_size(specs["memory"]))]


def test_retried_create_adopts_instead_of_duplicating(harness: Harness) -> None:
    ctx = harness.ctx(deployment_id="dep-retry")
    first = harness.engine().create(harness.resource, ctx)
    before = sorted(oid for oid, _ in harness.backend_objects("web", ctx))
    # A retry runs in a fresh engine (a new worker process would): it must find the first try's objects.
    second = harness.engine().create(harness.resource, ctx)
    assert second.adopted is True
    assert second.object_ids == first.object_ids
    assert sorted(oid for oid, _ in harness.backend_objects("web", ctx)) == before


def test_update_applies_the_new_spec_then_is_a_no_op(harness: Harness) -> None:
    engine = harness.engine()
    engine.create(harness.resource, harness.ctx("upd", "dep-1"))
    ctx = harness.ctx("upd", "dep-2")
    result = engine.update(harness.updated, ctx)
    assert result.changed is True
    assert result.spec_hash == L.spec_hash(harness.updated)
    specs = harness.updated["specs"]
    from blueprints.validation import parse_size

    assert harness.applied_limits(harness.updated, ctx) == [(float(specs["cpu"]), parse_size(specs["memory"]))]
    labels = [labels for _, labels in harness.backend_objects("web", ctx)]
    assert labels and all(lab[L.DEPLOYMENT] == "dep-2" for lab in labels)
    again = harness.engine().update(harness.updated, ctx)
    assert again.changed is False
    assert again.object_ids == result.object_ids


def test_delete_removes_everything_and_is_idempotent(harness: Harness) -> None:
    engine, ctx = harness.engine(), harness.ctx()
    created = engine.create(harness.resource, ctx)
    deleted = engine.delete("web", ctx)
    assert deleted.existed
    assert len(deleted.deleted_ids) >= len(created.object_ids)
    assert harness.backend_objects("web", ctx) == []
    assert engine.read("web", ctx) is None
    again = engine.delete("web", ctx)
    assert again.deleted_ids == []


def test_list_managed_returns_this_environments_labelled_objects(harness: Harness) -> None:
    engine = harness.engine()
    ours, theirs = harness.ctx(), harness.ctx()
    engine.create(harness.resource, ours)
    engine.create({**harness.resource, "name": "api"}, ours)
    engine.create(harness.resource, theirs)
    listed = engine.list_managed(ours)
    assert {m.resource_name for m in listed} == {"web", "api"}
    assert all(m.labels[L.ENV] == ours.environment and m.labels[L.MANAGED] == "true" for m in listed)
    backend_ids = {oid for name in ("web", "api") for oid, _ in harness.backend_objects(name, ours)}
    assert len(listed) >= len(backend_ids) > 0
    assert {m.resource_name for m in engine.list_managed(theirs)} == {"web"}


def test_an_unreachable_backend_is_a_transient_error(harness: Harness) -> None:
    if harness.kind == "simulator":
        engine = harness.engine(faults={"rate": 1.0, "mode": "transient"})
    else:
        engine = harness.engine(**harness.unreachable_config)
    with pytest.raises(EngineError) as info:
        engine.create(harness.resource, harness.ctx())
    assert info.value.permanent is False


def test_a_rejected_request_is_a_permanent_error(harness: Harness) -> None:
    ctx = harness.ctx()
    bad = {"name": "web", "type": "compute", "specs": {"cpu": 1, "memory": "lots"}}
    with pytest.raises(EngineError) as info:
        harness.engine().create(bad, ctx)
    assert info.value.permanent is True
    assert harness.backend_objects("web", ctx) == []

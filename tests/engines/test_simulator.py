"""Simulator specifics: persistence, seeded fault injection, lost responses, config validation."""

from __future__ import annotations

import pytest

from engines.base import EngineContext, EngineError
from engines.models import SimulatedObject
from engines.simulator import SimulatorEngine, reset_attempts

pytestmark = pytest.mark.django_db

DB = {"name": "db", "type": "database", "specs": {"engine": "postgresql", "storage": "20GB"}}


def ctx(env: str = "sim", dep: str = "d1") -> EngineContext:
    return EngineContext(environment=env, deployment_id=dep)


@pytest.fixture(autouse=True)
def _fresh_attempts() -> None:
    reset_attempts()


def engine(**config: object) -> SimulatorEngine:
    return SimulatorEngine({"latency_scale": 0, **config})


def test_objects_persist_in_the_database_with_outputs() -> None:
    result = engine().create({**DB, "count": 2}, ctx())
    rows = list(SimulatedObject.objects.filter(environment="sim", resource_name="db").order_by("instance"))
    assert [r.object_id for r in rows] == result.object_ids
    assert [r.instance for r in rows] == [0, 1]
    assert result.outputs["port"] == 5432 and result.outputs["engine"] == "postgresql"
    # A new engine instance (another process) reads the same state.
    assert engine().read("db", ctx()).object_ids == result.object_ids


def test_count_shrinks_on_update() -> None:
    engine().create({**DB, "count": 3}, ctx())
    result = engine().update({**DB, "count": 1}, ctx())
    assert len(result.object_ids) == 1
    assert SimulatedObject.objects.filter(environment="sim", resource_name="db").count() == 1


def test_named_transient_fault_clears_on_retry() -> None:
    eng = engine(faults={"resources": {"db": "transient"}, "transient_failures": 2})
    for _ in range(2):
        with pytest.raises(EngineError) as info:
            eng.create(DB, ctx())
        assert info.value.permanent is False and info.value.details["injected"] is True
    assert eng.create(DB, ctx()).object_ids
    assert SimulatedObject.objects.filter(resource_name="db").count() == 1


def test_named_permanent_fault_never_clears_and_makes_nothing() -> None:
    eng = engine(faults={"resources": {"db": "permanent"}})
    for _ in range(3):
        with pytest.raises(EngineError) as info:
            eng.create(DB, ctx())
        assert info.value.permanent is True
    assert not SimulatedObject.objects.filter(resource_name="db").exists()


def test_lost_response_applies_then_the_retry_adopts() -> None:
    eng = engine(faults={"resources": {"db": "lost"}})
    with pytest.raises(EngineError) as info:
        eng.create(DB, ctx())
    assert info.value.permanent is False
    made = list(SimulatedObject.objects.filter(resource_name="db").values_list("object_id", flat=True))
    assert len(made) == 1
    retry = eng.create(DB, ctx())
    assert retry.adopted is True and retry.object_ids == made


def test_faults_only_hit_the_configured_operations() -> None:
    eng = engine(faults={"resources": {"db": "permanent"}, "operations": ["delete"]})
    eng.create(DB, ctx())
    with pytest.raises(EngineError):
        eng.delete("db", ctx())
    assert SimulatedObject.objects.filter(resource_name="db").count() == 1


def _fault_pattern(seed: int) -> list[bool]:
    reset_attempts()
    eng = engine(seed=seed, faults={"rate": 0.5})
    pattern = []
    for i in range(24):
        try:
            eng.create({"name": f"r{i}", "type": "container"}, ctx(f"seed{seed}"))
            pattern.append(True)
        except EngineError:
            pattern.append(False)
    return pattern


def test_rate_faults_are_deterministic_under_a_seed() -> None:
    first, again, other = _fault_pattern(11), _fault_pattern(11), _fault_pattern(12)
    assert first == again
    assert first != other
    assert 0 < first.count(False) < 24


def test_clusters_are_isolated() -> None:
    engine(cluster="a").create(DB, ctx())
    assert engine(cluster="b").read("db", ctx()) is None
    assert engine(cluster="a").read("db", ctx()) is not None


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"latency_scale": -1}, "$.latency_scale"),
        ({"faults": {"rate": 2}}, "$.faults.rate"),
        ({"faults": {"resources": {"db": "sometimes"}}}, "$.faults.resources"),
        ({"latencies": {"teleporter": 1}}, "$.latencies.teleporter"),
        ({"colour": "blue"}, "$.colour"),
    ],
)
def test_validate_config_rejects(config: dict, path: str) -> None:
    assert path in [e["path"] for e in SimulatorEngine.validate_config(config)]


def test_validate_config_accepts_a_full_config() -> None:
    config = {
        "seed": 1,
        "latency_scale": 0.01,
        "latencies": {"database": 3},
        "jitter": 0.1,
        "cluster": "x",
        "faults": {"rate": 0.1, "mode": "lost", "resources": {"a": "permanent"}, "operations": ["create"]},
    }
    assert SimulatorEngine.validate_config(config) == []

"""Every security rule fires on a blueprint that breaks it and stays quiet on one that does not; suppressions."""

from __future__ import annotations

from typing import Any

import pytest

from blueprints.analysis import SEVERITIES, audit_document, severity_at_least
from blueprints.analysis.security import RULES, RULES_BY_ID
from blueprints.validation import validate_document
from tests.analysis.conftest import bp, res

PROD = "production"
APP = res("app", "compute", {"cpu": 1}, count=2)
DB = {"engine": "postgresql", "engine_version": "16"}
CACHE = {"engine": "redis", "engine_version": "7.4"}
SAFE_CONTAINER = {"image": "nginx:1.27", "cpu": 1, "memory": "512MB", "run_as_user": 101, "read_only_root": True}
NET = res("net", "network", {"cidr": "10.0.0.0/16"})


def lb(specs: dict[str, Any], target_count: int = 2) -> list[dict[str, Any]]:
    return [
        res("app", "compute", {"cpu": 1}, count=target_count),
        res("front", "loadbalancer", {"targets": ["app"], **specs}),
    ]


def container(**specs: Any) -> dict[str, Any]:
    return res("svc", "container", {**SAFE_CONTAINER, **specs})


# rule id -> (blueprint where it fires, blueprint where it does not)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "AICDN-SEC-001": (
        bp(res("db", "database", {**DB, "exposure": "public"})),
        bp(res("db", "database", {**DB, "exposure": "private"})),
    ),
    "AICDN-SEC-002": (
        bp(res("c", "cache", {**CACHE, "exposure": "public"})),
        bp(res("c", "cache", {**CACHE, "exposure": "private"})),
    ),
    "AICDN-SEC-003": (
        bp(res("vm", "compute", {"exposure": "public", "ports": [22]})),
        bp(res("vm", "compute", {"exposure": "public", "ports": [{"port": 22, "source": "10.8.0.0/16"}]})),
    ),
    "AICDN-SEC-004": (
        bp(res("vm", "compute", {"ports": [{"port": 3389, "source": "0.0.0.0/0"}]})),
        bp(res("vm", "compute", {"exposure": "private", "ports": [3389]})),
    ),
    "AICDN-SEC-005": (
        bp(*lb({"exposure": "public", "tls": False})),
        bp(*lb({"exposure": "public", "tls": True})),
    ),
    "AICDN-SEC-006": (
        bp(res("vm", "compute", {"exposure": "public", "ports": [5432]})),
        bp(res("vm", "compute", {"exposure": "public", "ports": [443]})),
    ),
    "AICDN-SEC-007": (
        bp(res("vm", "compute", {"exposure": "public", "ports": [8080]})),
        bp(res("vm", "compute", {"exposure": "public", "ports": [80, {"port": 8080, "source": "10.0.0.0/8"}]})),
    ),
    "AICDN-SEC-008": (
        bp(*lb({})),
        bp(*lb({"health_check": {"path": "/healthz"}})),
    ),
    "AICDN-SEC-009": (
        bp(res("k", "kubernetes_cluster", {"exposure": "public"})),
        bp(res("k", "kubernetes_cluster", {"exposure": "private"})),
    ),
    "AICDN-SEC-010": (
        bp(res("vm", "compute", {}, count=1), environment=PROD),
        bp(res("vm", "compute", {}, count=2), environment=PROD),
    ),
    "AICDN-SEC-011": (
        bp(res("db", "database", {**DB, "ha": True}), environment=PROD),
        bp(res("db", "database", {**DB, "ha": True, "backups": {"enabled": True}}), environment=PROD),
    ),
    "AICDN-SEC-012": (
        bp(res("db", "database", {**DB, "backups": True}), environment=PROD),
        bp(res("db", "database", {**DB, "backups": True, "replicas": 1}), environment=PROD),
    ),
    "AICDN-SEC-013": (
        bp(res("c", "cache", CACHE), environment=PROD),
        bp(res("c", "cache", {**CACHE, "ha": True}), environment=PROD),
    ),
    "AICDN-SEC-014": (
        bp(*lb({}, target_count=1), environment=PROD),
        bp(*lb({}, target_count=2), environment=PROD),
    ),
    "AICDN-SEC-015": (
        bp(res("db", "database", {**DB, "backups": {"retention_days": 3}}), environment=PROD),
        bp(res("db", "database", {**DB, "backups": {"retention_days": 14}}), environment=PROD),
    ),
    "AICDN-SEC-016": (
        bp(res("k", "kubernetes_cluster", {"nodes": 2}), environment=PROD),
        bp(res("k", "kubernetes_cluster", {"nodes": 3}), environment=PROD),
    ),
    "AICDN-SEC-017": (bp(container(privileged=True)), bp(container(privileged=False))),
    "AICDN-SEC-018": (bp(container(host_network=True)), bp(container(host_network=False))),
    "AICDN-SEC-019": (
        bp(res("svc", "container", {k: v for k, v in SAFE_CONTAINER.items() if k != "cpu"})),
        bp(container()),
    ),
    "AICDN-SEC-020": (
        bp(res("svc", "container", {k: v for k, v in SAFE_CONTAINER.items() if k != "memory"})),
        bp(container()),
    ),
    "AICDN-SEC-021": (bp(container(image="nginx:latest")), bp(container(image="nginx:1.27"))),
    "AICDN-SEC-022": (
        bp(container(image="registry.local:5000/team/app")),
        bp(container(image="registry.local:5000/team/app@sha256:" + "a" * 64)),
    ),
    "AICDN-SEC-023": (bp(container(run_as_user=0)), bp(container(run_as_user=10001))),
    "AICDN-SEC-024": (
        bp(res("svc", "container", {k: v for k, v in SAFE_CONTAINER.items() if k != "run_as_user"})),
        bp(container()),
    ),
    "AICDN-SEC-025": (bp(container(read_only_root=False)), bp(container(read_only_root=True))),
    "AICDN-SEC-026": (
        bp(container(env={"DB_PASSWORD": "hunter2"})),
        bp(container(env={"DB_PASSWORD": "vault:kv/app/db", "DB_HOST": "db", "TOKEN_TTL": 3600})),
    ),
    "AICDN-SEC-027": (
        bp(container(env={"UPLOAD_TARGET": "AKIAIOSFODNN7EXAMPLE"})),
        bp(container(env={"UPLOAD_TARGET": "s3://bucket/prefix"})),
    ),
    "AICDN-SEC-028": (
        bp(container(env={"DATABASE_URL": "postgres://app:s3cret@db:5432/app"})),
        bp(container(env={"DATABASE_URL": "postgres://db:5432/app"})),
    ),
    "AICDN-SEC-029": (
        bp(container(command=["server", "--password=s3cret"])),
        bp(container(command=["server", "--password-file=/run/secrets/db"])),
    ),
    "AICDN-SEC-030": (bp(container(secrets=["hunter2"])), bp(container(secrets=["vault:kv/app/db"]))),
    "AICDN-SEC-031": (
        bp(res("v", "volume", {"storage": "10GB"})),
        bp(res("v", "volume", {"storage": "10GB", "encrypted": True})),
    ),
    "AICDN-SEC-032": (
        bp(res("db", "database", {**DB, "encrypted": False}), environment="staging"),
        bp(res("db", "database", {**DB, "encrypted": True}), environment="staging"),
    ),
    "AICDN-SEC-033": (
        bp(res("v", "volume", {"encrypted": True}), environment=PROD),
        bp(res("v", "volume", {"encrypted": True, "backups": True}), environment=PROD),
    ),
    "AICDN-SEC-034": (
        bp(res("vm", "compute", {"guest_agent": True}), provider="proxmox"),
        bp(res("vm", "compute", {"guest_agent": True, "firewall": True}), provider="proxmox"),
    ),
    "AICDN-SEC-035": (
        bp(res("vm", "compute", {"firewall": True, "guest_agent": False}, provider="proxmox")),
        bp(res("vm", "compute", {"firewall": True, "guest_agent": True}, provider="proxmox")),
    ),
    "AICDN-SEC-036": (
        bp(res("vm", "compute", {}, count=2), provider="proxmox", environment=PROD),
        bp(res("vm", "compute", {"backups": {"enabled": True}}, count=2), provider="proxmox", environment=PROD),
    ),
    "AICDN-SEC-037": (
        bp(res("k", "kubernetes_cluster", {"nodes": 3})),
        bp(res("k", "kubernetes_cluster", {"nodes": 3, "kubernetes_version": "1.32"})),
    ),
    "AICDN-SEC-038": (
        bp(res("k", "kubernetes_cluster", {"kubernetes_version": "1.27"})),
        bp(res("k", "kubernetes_cluster", {"kubernetes_version": "v1.32.2"})),
    ),
    "AICDN-SEC-039": (
        bp(container(), provider="kubernetes"),
        bp(container(namespace="shop"), provider="kubernetes"),
    ),
    "AICDN-SEC-040": (
        bp(res("k", "kubernetes_cluster", {"nodes": 3}), environment=PROD),
        bp(res("k", "kubernetes_cluster", {"nodes": 3, "ha": True}), environment=PROD),
    ),
    "AICDN-SEC-041": (
        bp(res("vm", "compute", {}, count=2), environment=PROD),
        bp(NET, res("vm", "compute", {}, count=2, network="net"), environment=PROD),
    ),
    "AICDN-SEC-042": (
        bp(res("db", "database", {"engine": "postgres", "engine_version": "12"})),
        bp(res("db", "database", {"engine": "postgres", "engine_version": "16"})),
    ),
    "AICDN-SEC-043": (
        bp(res("c", "cache", {"engine": "redis"})),
        bp(res("c", "cache", {"engine": "redis", "engine_version": "7.4"})),
    ),
    "AICDN-SEC-044": (
        bp(res("net", "network", {"cidr": "8.8.0.0/16"})),
        bp(res("net", "network", {"cidr": "192.168.10.0/24"})),
    ),
}


def _fired(document: dict[str, Any], rule_id: str) -> list[dict[str, Any]]:
    assert validate_document(document) == [], "test blueprint must be valid"
    return [f for f in audit_document(document)["findings"] if f["rule_id"] == rule_id]


def test_at_least_thirty_rules_each_with_a_case() -> None:
    assert len(RULES) >= 30
    assert sorted(CASES) == sorted(RULES_BY_ID)
    assert len({r.id for r in RULES}) == len(RULES)
    for rule in RULES:
        assert rule.severity in SEVERITIES
        assert rule.title and rule.rationale and rule.remediation


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires(rule_id: str) -> None:
    findings = _fired(CASES[rule_id][0], rule_id)
    assert findings, f"{rule_id} should fire"
    finding = findings[0]
    assert finding["severity"] == RULES_BY_ID[rule_id].severity
    assert finding["path"].startswith("$.resources[")
    assert finding["resource"] in {r["name"] for r in CASES[rule_id][0]["resources"]}


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_does_not_fire(rule_id: str) -> None:
    assert _fired(CASES[rule_id][1], rule_id) == []


def test_finding_paths_point_at_the_field() -> None:
    document = bp(res("a", "compute"), res("db", "database", {**DB, "exposure": "public"}))
    finding = _fired(document, "AICDN-SEC-001")[0]
    assert finding["path"] == "$.resources[1].specs.exposure"
    assert finding["resource"] == "db"
    ssh = _fired(bp(res("vm", "compute", {"exposure": "public", "ports": [80, 22]})), "AICDN-SEC-003")
    assert [f["path"] for f in ssh] == ["$.resources[0].specs.ports[1]"]


def test_port_exposure_rules() -> None:
    # A bare port on a private resource is not open to the world; an object port with a /0 source is.
    assert _fired(bp(res("vm", "compute", {"ports": [22]})), "AICDN-SEC-003") == []
    assert _fired(bp(res("vm", "compute", {"ports": [{"port": 22, "source": "::/0"}]})), "AICDN-SEC-003")
    public_no_source = bp(res("vm", "compute", {"exposure": "public", "ports": [{"port": 22}]}))
    assert _fired(public_no_source, "AICDN-SEC-003")


def test_counts_max_severity_and_passed() -> None:
    result = audit_document(CASES["AICDN-SEC-017"][0])  # privileged container: critical
    assert result["max_severity"] == "critical"
    assert result["passed"] is False
    assert result["counts"]["critical"] == 1
    assert sum(result["counts"].values()) == len(result["findings"])
    low_only = audit_document(bp(res("c", "cache", {"engine": "redis"})))
    assert low_only["max_severity"] == "low"
    assert low_only["passed"] is True
    clean = audit_document(bp(res("c", "cache", CACHE)))
    assert clean["max_severity"] == "none" and clean["findings"] == [] and clean["passed"] is True


def test_severity_helper() -> None:
    assert SEVERITIES == ("critical", "high", "medium", "low")
    assert severity_at_least("critical", "high")
    assert severity_at_least("high", "high")
    assert not severity_at_least("medium", "high")
    assert not severity_at_least("none", "low")
    with pytest.raises(ValueError):
        severity_at_least("urgent", "high")


def test_suppression_by_rule_resource_and_path() -> None:
    document = bp(
        res("db1", "database", {**DB, "exposure": "public"}),
        res("db2", "database", {**DB, "exposure": "public"}),
    )
    everything = audit_document(document, [{"rule_id": "AICDN-SEC-001", "justification": "lab network only"}])
    assert [f["rule_id"] for f in everything["findings"]].count("AICDN-SEC-001") == 0
    assert {s["resource"] for s in everything["suppressed"]} == {"db1", "db2"}
    assert everything["suppressed"][0]["justification"] == "lab network only"
    assert everything["counts"]["critical"] == 0

    one = audit_document(document, [{"rule_id": "AICDN-SEC-001", "resource": "db1", "justification": "x"}])
    assert [f["resource"] for f in one["findings"] if f["rule_id"] == "AICDN-SEC-001"] == ["db2"]
    assert one["passed"] is False

    by_path = audit_document(
        document, [{"rule_id": "AICDN-SEC-001", "path": "$.resources[1].specs.exposure", "justification": "x"}]
    )
    assert [f["resource"] for f in by_path["findings"] if f["rule_id"] == "AICDN-SEC-001"] == ["db1"]

    other_rule = audit_document(document, [{"rule_id": "AICDN-SEC-002", "justification": "x"}])
    assert other_rule["suppressed"] == []

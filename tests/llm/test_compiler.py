"""The compiler: every intent compiles to a valid blueprint with sensible, secure defaults; follow-ups keep state."""

from __future__ import annotations

import itertools

import pytest

from blueprints.validation import validate_document
from llm.compiler import compile_blueprint, document_roles, intent_from_document, reconcile
from llm.extractor import Facts, Sizes, extract
from llm.intent import CACHE_CHOICES, DATABASE_CHOICES, Intent, intent_from_data, intent_problems, intent_schema


def by_name(document: dict) -> dict[str, dict]:
    return {r["name"]: r for r in document["resources"]}


@pytest.mark.parametrize(
    ("web", "worker", "lb", "database", "instances", "ha", "cache", "nodes"),
    [
        combo
        for combo in itertools.product(
            (0, 1, 4),
            (0, 2),
            (False, True),
            ("none", "postgresql", "mongodb"),
            (1, 3),
            (False, True),
            ("none", "redis"),
            (0, 3),
        )
        if any((combo[0], combo[1], combo[3] != "none", combo[6] != "none", combo[7]))
    ][::7],
)
def test_intents_compile_to_valid_blueprints(web, worker, lb, database, instances, ha, cache, nodes):
    intent = Intent(web, worker, lb, database, instances if database != "none" else 0, ha, cache, nodes)
    for environment in ("production", "development"):
        compiled = compile_blueprint(intent, Facts(environment=environment), description="x")
        assert compiled.errors == [], compiled.errors
        assert validate_document(compiled.document) == []
        # reading the document back gives the structure that was compiled
        assert intent_from_document(compiled.document) == compiled.intent


def test_load_balancer_targets_web_with_tls_and_health_check():
    doc = compile_blueprint(Intent(web_servers=3, load_balancer=True), Facts(environment="staging")).document
    res = by_name(doc)
    lb = res["lb"]["specs"]
    assert lb["targets"] == ["web"] and lb["tls"] is True and lb["exposure"] == "public"
    assert lb["ports"] == [{"port": 443, "target_port": 8080, "protocol": "https"}]
    assert lb["health_check"]["port"] == 8080
    assert res["web"]["specs"]["exposure"] == "private" and res["web"]["count"] == 3


def test_web_without_load_balancer_is_public_https_only():
    compiled = compile_blueprint(Intent(web_servers=1), Facts(environment="development"))
    web = by_name(compiled.document)["web"]["specs"]
    assert web["exposure"] == "public" and web["tls"] is True and web["ports"] == [{"port": 443, "protocol": "https"}]
    assert any("public on HTTPS" in a for a in compiled.assumptions)


def test_ha_database_has_replicas_backups_encryption_in_production():
    compiled = compile_blueprint(
        Intent(web_servers=2, database="postgresql", database_instances=3, database_ha=True),
        Facts(environment="production"),
    )
    db = by_name(compiled.document)["db"]["specs"]
    assert db["ha"] is True and db["replicas"] == 2
    assert db["backups"] == {"enabled": True, "retention_days": 30, "schedule": "0 2 * * *"}
    assert db["encrypted"] is True and db["exposure"] == "private" and db["ports"] == [5432]
    assert db["engine_version"] == "16"


def test_ha_with_one_instance_gets_a_standby_and_says_so():
    intent, notes = reconcile(Intent(database="mysql", database_instances=1, database_ha=True), Facts())
    assert intent.database_instances == 2
    assert any("standby" in n for n in notes)


def test_development_database_has_no_backups():
    doc = compile_blueprint(Intent(database="mariadb", database_instances=1), Facts(environment="development")).document
    assert by_name(doc)["db"]["specs"]["backups"] is False


def test_dependencies_and_network():
    doc = compile_blueprint(
        Intent(web_servers=2, worker_servers=1, database="postgresql", database_instances=1, cache="redis"),
        Facts(environment="test"),
    ).document
    res = by_name(doc)
    assert res["net"]["type"] == "network"
    assert all(r.get("network") == "net" for name, r in res.items() if name != "net")
    assert res["web"]["depends_on"] == ["db", "cache"] and res["worker"]["depends_on"] == ["db", "cache"]


def test_stated_sizes_win_and_unstated_are_assumed():
    facts = extract("2 web servers with 16GB RAM, a postgres database with 1TB disk, production")
    compiled = compile_blueprint(
        Intent(web_servers=2, database="postgresql", database_instances=1), facts, description="x"
    )
    res = by_name(compiled.document)
    assert res["web"]["specs"]["memory"] == "16GB"
    assert res["web"]["specs"]["cpu"] == 2  # production default
    assert res["db"]["specs"]["storage"] == "1TB" and res["db"]["specs"]["memory"] == "16GB"
    assert "no size stated for the web servers: assumed 2 vCPU, 50GB disk" in compiled.assumptions


def test_provider_docker_makes_containers():
    doc = compile_blueprint(Intent(web_servers=2, worker_servers=1), Facts(provider="docker")).document
    assert doc["provider"] == "docker"
    assert {by_name(doc)["web"]["type"], by_name(doc)["worker"]["type"]} == {"container"}


def test_kubernetes_cluster_and_lb_on_it():
    doc = compile_blueprint(
        Intent(kubernetes_nodes=5, load_balancer=True), Facts(sizes={"kubernetes": Sizes(memory="32GB")})
    ).document
    res = by_name(doc)
    assert res["k8s"]["type"] == "kubernetes_cluster" and res["k8s"]["specs"]["nodes"] == 5
    assert res["k8s"]["specs"]["memory"] == "32GB"
    assert res["lb"]["specs"]["targets"] == ["k8s"]


def test_load_balancer_alone_gets_web_servers():
    compiled = compile_blueprint(Intent(load_balancer=True), Facts())
    assert by_name(compiled.document)["web"]["count"] == 2
    assert compiled.valid


def test_negations_and_named_engines_override_the_model():
    facts = extract("two app servers with mariadb, no cache and no load balancer")
    intent, _ = reconcile(
        Intent(web_servers=2, load_balancer=True, database="postgresql", database_instances=1, cache="redis"), facts
    )
    assert (intent.database, intent.cache, intent.load_balancer) == ("mariadb", "none", False)


def test_generated_name_and_explicit_name():
    assert compile_blueprint(Intent(web_servers=1), Facts(environment="staging")).document["name"] == "web-app-staging"
    assert compile_blueprint(Intent(web_servers=1), extract("one web server called shop")).document["name"] == "shop"


# --- follow-ups over an existing document --------------------------------------------------------------------------

TEMPLATE = {
    "version": "1.0",
    "name": "storefront",
    "environment": "production",
    "provider": "proxmox",
    "resources": [
        {
            "name": "frontend",
            "type": "compute",
            "count": 2,
            "specs": {"cpu": 8, "memory": "32GB"},
            "depends_on": ["pg"],
        },
        {"name": "pg", "type": "database", "specs": {"engine": "postgres", "engine_version": "15", "replicas": 1}},
        {"name": "edge", "type": "loadbalancer", "specs": {"targets": ["frontend"], "algorithm": "least_connections"}},
        {"name": "job-runner", "type": "compute", "specs": {"cpu": 2}},
        {"name": "media", "type": "volume", "specs": {"storage": "1TB"}, "depends_on": ["frontend"]},
    ],
}


def test_document_roles_and_intent_from_a_hand_written_blueprint():
    roles = document_roles(TEMPLATE)
    assert {role: r["name"] for role, r in roles.items()} == {
        "loadbalancer": "edge",
        "database": "pg",
        "web": "frontend",
        "worker": "job-runner",
    }
    assert intent_from_document(TEMPLATE) == Intent(2, 1, True, "postgresql", 2, False, "none", 0)


def test_follow_up_keeps_names_specs_and_extras():
    assert validate_document(TEMPLATE) == []
    intent = Intent(web_servers=6, worker_servers=1, load_balancer=True, database="postgresql", database_instances=2)
    compiled = compile_blueprint(intent, extract("scale the frontend to 6"), base=TEMPLATE)
    assert compiled.valid, compiled.errors
    doc = compiled.document
    res = by_name(doc)
    assert doc["name"] == "storefront" and doc["environment"] == "production" and doc["provider"] == "proxmox"
    assert res["frontend"]["count"] == 6 and res["frontend"]["specs"]["cpu"] == 8
    assert res["edge"]["specs"]["algorithm"] == "least_connections" and res["edge"]["specs"]["targets"] == ["frontend"]
    assert res["pg"]["specs"]["engine_version"] == "15"
    assert res["media"] == TEMPLATE["resources"][4]
    assert compiled.assumptions == []


def test_follow_up_engine_change_resets_version_and_port():
    intent = Intent(web_servers=2, worker_servers=1, load_balancer=True, database="mysql", database_instances=1)
    doc = compile_blueprint(intent, extract("switch the database to mysql"), base=TEMPLATE).document
    pg = by_name(doc)["pg"]["specs"]
    assert pg["engine"] == "mysql" and pg["engine_version"] == "8.4" and pg["ports"] == [3306]
    assert "replicas" not in pg


def test_follow_up_removing_web_tier_drops_dangling_references():
    intent = Intent(worker_servers=1, database="postgresql", database_instances=2)
    compiled = compile_blueprint(intent, extract("drop the web tier"), base=TEMPLATE)
    res = by_name(compiled.document)
    assert "frontend" not in res and "edge" not in res
    assert "depends_on" not in res["media"]
    assert compiled.valid, compiled.errors


def test_new_resource_does_not_collide_with_a_kept_name():
    base = {
        "version": "1.0",
        "name": "x",
        "resources": [
            {"name": "web", "type": "compute"},
            {"name": "cache", "type": "volume", "specs": {"storage": "10GB"}},
        ],
    }
    compiled = compile_blueprint(Intent(web_servers=1, cache="redis"), Facts(), base=base)
    res = by_name(compiled.document)
    assert res["cache"]["type"] == "volume" and res["cache-2"]["type"] == "cache"
    assert compiled.valid, compiled.errors


# --- the intent itself ---------------------------------------------------------------------------------------------


def test_intent_schema_lists_every_field_in_order():
    schema = intent_schema()
    assert list(schema["properties"]) == schema["required"]
    assert schema["properties"]["database"]["enum"] == list(DATABASE_CHOICES)
    assert schema["properties"]["cache"]["enum"] == list(CACHE_CHOICES)


@pytest.mark.parametrize(
    ("patch", "problem"),
    [
        ({"web_servers": 101}, "web_servers is 101; it must be from 0 to 100"),
        ({"kubernetes_nodes": -1}, "kubernetes_nodes is -1"),
        ({"database_instances": 22}, "database_instances is 22"),
        ({"web_servers": True}, "web_servers must be a whole number"),
        ({"web_servers": 2.5}, "web_servers must be a whole number"),
        ({"load_balancer": "yes"}, "load_balancer must be true or false"),
        ({"database": "oracle"}, "database must be one of"),
        ({"cache": 3}, "cache must be one of"),
        ({"extra": 1}, "unknown fields extra"),
    ],
)
def test_intent_problems(patch, problem):
    data = Intent().as_dict() | patch
    assert any(problem in p for p in intent_problems(data))


def test_intent_problems_missing_and_not_object():
    assert intent_problems([]) == ["the answer must be one JSON object"]
    assert "cache is missing" in intent_problems({k: v for k, v in Intent().as_dict().items() if k != "cache"})


def test_intent_from_data_normalises():
    intent = intent_from_data(Intent(database="postgres", database_instances=0, cache="").as_dict())
    assert (intent.database, intent.database_instances, intent.cache) == ("postgresql", 1, "none")
    intent = intent_from_data(Intent(database="none", database_instances=3, database_ha=True).as_dict())
    assert (intent.database_instances, intent.database_ha) == (0, False)

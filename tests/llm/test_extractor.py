"""The deterministic extractor: sizes, ports, environment, provider, engines, negations, names, many phrasings."""

from __future__ import annotations

import pytest

from llm.extractor import extract, slug


def sizes(text: str) -> dict:
    return {role: s.as_dict() for role, s in extract(text).sizes.items()}


@pytest.mark.parametrize(
    ("text", "role", "expected"),
    [
        ("3 web servers with 8GB RAM", "web", {"memory": "8GB"}),
        ("web servers with 8 GB of memory", "web", {"memory": "8GB"}),
        ("app nodes, RAM: 16GB", "web", {"memory": "16GB"}),
        ("16 gigs of ram for the api servers", "web", {"memory": "16GB"}),
        ("a frontend with 512MB memory", "web", {"memory": "512MB"}),
        ("16GB RAM app servers and a postgres db", "web", {"memory": "16GB"}),
        ("web tier: 4 vCPU / 8GB", "web", {"cpu": 4, "memory": "8GB"}),
        ("web servers, 2 cores, 4GB", "web", {"cpu": 2, "memory": "4GB"}),
        ("two CPUs and 4GB RAM on the web servers", "web", {"cpu": 2, "memory": "4GB"}),
        ("workers with sixteen cores and 64GB memory", "worker", {"cpu": 16, "memory": "64GB"}),
        ("batch processing boxes with 32 vCPUs", "worker", {"cpu": 32}),
        ("a postgres database with 100GB SSD storage", "database", {"storage": "100GB", "storage_tier": "ssd"}),
        ("database server with 2TB of NVMe storage", "database", {"storage": "2TB", "storage_tier": "nvme"}),
        ("mysql, disk of 500GB", "database", {"storage": "500GB"}),
        ("a mongo db with 1.5TB disk", "database", {"storage": "1.5TB"}),
        ("redis with 4GB memory", "cache", {"memory": "4GB"}),
        ("a kubernetes cluster, 5 nodes, 8 cores and 32GB memory per node", "kubernetes", {"cpu": 8, "memory": "32GB"}),
        ("All servers need 4 cores / 16GB.", "all", {"cpu": 4, "memory": "16GB"}),
        ("Staging: two app nodes, one mysql, 8GB RAM each", "all", {"memory": "8GB"}),
        ("8GB RAM, 100GB disk", "all", {"memory": "8GB", "storage": "100GB"}),
    ],
)
def test_sizes_attach_to_the_role_they_are_written_next_to(text, role, expected):
    assert sizes(text).get(role) == expected


def test_sizes_split_between_roles_in_one_sentence():
    found = sizes("3 web servers with 4 vCPU and 8GB RAM, and a postgres database with 32GB RAM and 200GB disk")
    assert found == {"web": {"cpu": 4, "memory": "8GB"}, "database": {"memory": "32GB", "storage": "200GB"}}


def test_sizes_in_separate_sentences():
    found = sizes("Two API servers. They need 8GB RAM. The database gets 64GB memory.")
    assert found["database"] == {"memory": "64GB"}
    assert found["all"] == {"memory": "8GB"}


def test_numbers_that_are_not_sizes_are_ignored():
    assert sizes("3 web servers and 2 workers for 500 users") == {}


@pytest.mark.parametrize(
    ("text", "environment"),
    [
        ("three web servers for production", "production"),
        ("prod setup with redis", "production"),
        ("Production-grade cluster", "production"),
        ("a staging environment", "staging"),
        ("pre-prod copy of the shop", "staging"),
        ("a dev box", "development"),
        ("for development only", "development"),
        ("QA environment with two app servers", "test"),
        ("small test setup", "test"),
        ("move it to staging", "staging"),
        ("promote this from staging to production", "production"),
        ("we will run a load test against it in staging", "staging"),
        ("three web servers", None),
    ],
)
def test_environment(text, environment):
    assert extract(text).environment == environment


@pytest.mark.parametrize(
    ("text", "provider"),
    [
        ("deploy on proxmox", "proxmox"),
        ("Proxmox VMs for the web tier", "proxmox"),
        ("run it with docker", "docker"),
        ("containers on kubernetes", "kubernetes"),
        ("deploy to k8s", "kubernetes"),
        ("a kubernetes cluster with 3 nodes", None),
        ("a k8s cluster of 5 nodes on proxmox", "proxmox"),
        ("two web servers", None),
    ],
)
def test_provider(text, provider):
    assert extract(text).provider == provider


@pytest.mark.parametrize(
    ("text", "engine", "version"),
    [
        ("a postgres database", "postgresql", None),
        ("PostgreSQL 16 with replicas", "postgresql", "16"),
        ("pg 15", "postgresql", "15"),
        ("MySQL 8.0 primary", "mysql", "8.0"),
        ("mariadb", "mariadb", None),
        ("a mongo replica set", "mongodb", None),
        ("MongoDB 7", "mongodb", "7.0"),
        ("postgres 3 replicas", "postgresql", None),
        ("a database", None, None),
        ("no database, just redis", None, None),
    ],
)
def test_database_engine(text, engine, version):
    facts = extract(text)
    assert (facts.database_engine, facts.database_version) == (engine, version)


@pytest.mark.parametrize(
    ("text", "engine", "version"),
    [
        ("redis for sessions", "redis", None),
        ("Redis 7.2 cache", "redis", "7.2"),
        ("a valkey cache", "valkey", None),
        ("memcached in front", "memcached", None),
        ("memcache", "memcached", None),
        ("We don't need a load balancer. redis 7.2 for sessions", "redis", "7.2"),
        ("no redis please", None, None),
        ("a cache", None, None),
    ],
)
def test_cache_engine(text, engine, version):
    facts = extract(text)
    assert (facts.cache_engine, facts.cache_version) == (engine, version)


@pytest.mark.parametrize(
    ("text", "negated"),
    [
        ("no database", {"database"}),
        ("without a db", {"database"}),
        ("we don't need a database", {"database"}),
        ("does not need any persistence", {"database"}),
        ("no cache", {"cache"}),
        ("skip the caching", {"cache"}),
        ("no load balancer", {"loadbalancer"}),
        ("no LB needed", {"loadbalancer"}),
        ("remove the database and add 2 workers", {"database"}),
        ("get rid of the load balancer", {"loadbalancer"}),
        ("drop the redis cache", {"cache"}),
        ("no background workers", {"worker"}),
        ("two web servers and a database", set()),
        ("a database with no public access", set()),
    ],
)
def test_negations(text, negated):
    assert extract(text).negated == negated


@pytest.mark.parametrize(
    ("text", "ports"),
    [
        ("the app listens on port 8080", {"web": [8080]}),
        ("web servers on ports 80 and 443", {"web": [80, 443]}),
        ("postgres on port 6543", {"database": [6543]}),
        ("port: 3000", {"all": [3000]}),
        ("port 99999 is not a port", {}),
    ],
)
def test_ports(text, ports):
    assert extract(text).ports == ports


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("a web server called Acme-Shop", "acme-shop"),
        ("name it billing_api", "billing-api"),
        ("for our shop app", "shop"),
        ("for a new analytics platform", "analytics"),
        ("three web servers", None),
    ],
)
def test_name(text, name):
    assert extract(text).name == name


def test_states_numbers():
    assert extract("three web servers").states_numbers
    assert extract("2 app servers").states_numbers
    assert extract("a couple of workers").states_numbers
    assert not extract("a website with a database").states_numbers


@pytest.mark.parametrize(("raw", "label"), [("My Shop!", "my-shop"), ("9lives", None), ("--x--", "x"), ("", None)])
def test_slug(raw, label):
    assert slug(raw) == label

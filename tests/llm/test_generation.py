"""Exact generation flows against the scripted server: repair round, ranges, follow-ups, assumptions, saving, API."""

from __future__ import annotations

import json

import pytest

from aicdn_project.errors import PermissionDenied, ServiceUnavailable
from blueprints.models import Blueprint, BlueprintVersion
from blueprints.validation import validate_document
from llm.generation import GenerationFailed, generate_blueprint, update_blueprint
from llm.prompts import INTENT_SYSTEM_PROMPT


def _by_name(document: dict) -> dict[str, dict]:
    return {r["name"]: r for r in document["resources"]}


def test_happy_path_sends_schema_and_compiles(scripted):
    scripted.reply_intent(web_servers=3, load_balancer=True, database="postgresql", database_instances=1)
    result = generate_blueprint(description="3 web servers behind a load balancer and postgres, for production")
    sent = scripted.requests[0]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["strict"] is True
    assert sent["messages"][0] == {"role": "system", "content": INTENT_SYSTEM_PROMPT}
    assert sent["messages"][-1]["content"].startswith("Request: 3 web servers")
    assert sent["temperature"] == 0.0
    assert result["valid"] and result["errors"] == []
    assert validate_document(result["document"]) == []
    res = _by_name(result["document"])
    assert res["web"]["count"] == 3
    assert res["lb"]["specs"]["targets"] == ["web"] and res["lb"]["specs"]["tls"] is True
    assert res["db"]["specs"]["backups"]["enabled"] is True  # production database
    assert result["document"]["environment"] == "production"
    assert result["model"] == "scripted" and result["repaired"] is False
    assert set(result["timings"]) >= {"model_s", "total_s", "tokens_in", "tokens_out"}
    assert "version" not in result


def test_invalid_json_gets_one_repair_round(scripted):
    scripted.reply_content('{"web_servers": 2, "worker_servers": ')  # cut off
    scripted.reply_intent(web_servers=2, load_balancer=True)
    result = generate_blueprint(description="two web servers with a load balancer")
    assert result["repaired"] is True and result["valid"]
    repair = scripted.requests[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": '{"web_servers": 2, "worker_servers": '}
    assert "not valid JSON" in repair[-1]["content"]
    assert _by_name(result["document"])["web"]["count"] == 2


def test_out_of_range_count_is_repaired(scripted):
    scripted.reply_intent(web_servers=500)
    scripted.reply_intent(web_servers=100)
    result = generate_blueprint(description="a hundred web servers")
    assert "web_servers is 500; it must be from 0 to 100" in scripted.requests[1]["messages"][-1]["content"]
    assert _by_name(result["document"])["web"]["count"] == 100


def test_still_invalid_after_repair_is_a_clear_error(scripted):
    scripted.reply_intent(web_servers=-3)
    scripted.reply_content('{"web_servers": "many"}')
    with pytest.raises(GenerationFailed) as info:
        generate_blueprint(description="lots of servers")
    assert info.value.status_code == 422
    assert "even after one correction" in info.value.message
    assert any("web_servers must be a whole number" in p for p in info.value.details["problems"])
    assert len(scripted.requests) == 2  # exactly one repair round


def test_unknown_engine_from_model_is_repaired(scripted):
    scripted.reply_intent(database="oracle", database_instances=1)
    scripted.reply_intent(database="postgresql", database_instances=1)
    result = generate_blueprint(description="an enterprise database")
    assert "database must be one of" in scripted.requests[1]["messages"][-1]["content"]
    assert _by_name(result["document"])["db"]["specs"]["engine"] == "postgresql"


def test_ambiguous_request_lists_assumptions(scripted):
    scripted.reply_intent(web_servers=1, database="postgresql", database_instances=1)
    result = generate_blueprint(description="a website with a database")
    text = " | ".join(result["assumptions"])
    assert "environment not stated: assumed development" in text
    assert "database engine not named: assumed postgresql 16" in text
    assert "no counts stated" in text
    assert "no size stated for the web servers" in text
    assert "no name given" in text


def test_stated_facts_override_the_model(scripted):
    # The model guessed mysql and a cache; the text names postgres and refuses a cache.
    scripted.reply_intent(web_servers=2, database="mysql", database_instances=1, cache="redis")
    result = generate_blueprint(
        description="2 app servers with 16GB RAM and 4 vCPU on port 9000, a postgres 15 db, no cache, staging, "
        "deploy on proxmox"
    )
    doc = result["document"]
    res = _by_name(doc)
    assert "cache" not in res
    assert res["db"]["specs"]["engine"] == "postgresql" and res["db"]["specs"]["engine_version"] == "15"
    assert res["web"]["specs"]["memory"] == "16GB" and res["web"]["specs"]["cpu"] == 4
    assert res["web"]["specs"]["ports"] == [9000]
    assert doc["environment"] == "staging" and doc["provider"] == "proxmox"
    assert result["intent"]["cache"] == "none" and result["model_intent"]["cache"] == "redis"


def test_nothing_to_build_asks_for_more(scripted):
    scripted.reply_intent()
    with pytest.raises(GenerationFailed) as info:
        generate_blueprint(description="hello there")
    assert info.value.code == "nothing_to_build"


def test_model_server_down_is_service_unavailable(settings, dead_url, no_backoff):
    settings.LLM_BASE_URL = dead_url
    with pytest.raises(ServiceUnavailable) as info:
        generate_blueprint(description="one web server")
    assert dead_url in info.value.message


# --- follow-ups ----------------------------------------------------------------------------------------------------


@pytest.fixture
def current(scripted) -> dict:
    scripted.reply_intent(web_servers=2, load_balancer=True, database="postgresql", database_instances=1)
    doc = generate_blueprint(description="two web servers behind a load balancer with postgres, production")["document"]
    scripted.requests.clear()
    return doc


def test_follow_up_sends_current_intent_and_keeps_names(scripted, current):
    scripted.reply_intent(web_servers=5, load_balancer=True, database="postgresql", database_instances=1)
    result = update_blueprint(current, "make it 5 web servers")
    user = scripted.requests[0]["messages"][-1]["content"]
    assert user.startswith("Current: {")
    assert json.loads(user.split("\n")[0][len("Current: ") :])["web_servers"] == 2
    assert user.endswith("Change: make it 5 web servers")
    new = _by_name(result["document"])
    old = _by_name(current)
    assert new["web"]["count"] == 5
    assert new["web"]["specs"] == old["web"]["specs"]  # untouched settings survive
    assert new["db"] == old["db"]
    assert result["document"]["name"] == current["name"]
    assert result["assumptions"] == []


def test_follow_up_add_cache_and_move_to_staging(scripted, current):
    scripted.reply_intent(web_servers=2, load_balancer=True, database="postgresql", database_instances=1, cache="redis")
    result = update_blueprint(current, "add a Redis cache and move it to staging")
    doc = result["document"]
    res = _by_name(doc)
    assert doc["environment"] == "staging"
    assert res["cache"]["specs"]["engine"] == "redis"
    assert set(res["web"]["depends_on"]) == {"db", "cache"}
    assert res["db"]["specs"]["backups"]["retention_days"] == 7  # staging policy replaces production's
    assert result["valid"]


def test_follow_up_removal_drops_references(scripted, current):
    scripted.reply_intent(web_servers=2, load_balancer=True)  # the model dropped the database
    result = update_blueprint(current, "we don't need the database any more")
    res = _by_name(result["document"])
    assert "db" not in res and "depends_on" not in res["web"]
    assert result["valid"]


def test_follow_up_keeps_resources_the_intent_does_not_model(scripted, current):
    current["resources"].append(
        {"name": "uploads", "type": "volume", "specs": {"storage": "500GB"}, "depends_on": ["db"]}
    )
    scripted.reply_intent(web_servers=3, load_balancer=True, database="postgresql", database_instances=1)
    result = update_blueprint(current, "3 web servers please")
    assert _by_name(result["document"])["uploads"] == {
        "name": "uploads",
        "type": "volume",
        "specs": {"storage": "500GB"},
        "depends_on": ["db"],
    }


def test_follow_up_size_change_applies_to_named_role(scripted, current):
    scripted.reply_intent(web_servers=2, load_balancer=True, database="postgresql", database_instances=1)
    result = update_blueprint(current, "give the database 64GB RAM and 1TB disk")
    res = _by_name(result["document"])
    assert res["db"]["specs"]["memory"] == "64GB" and res["db"]["specs"]["storage"] == "1TB"
    assert res["web"]["specs"] == _by_name(current)["web"]["specs"]


# --- saving and the API --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_save_creates_blueprint_then_numbers_the_name(scripted, requester):
    scripted.reply_intent(web_servers=1, database="mysql", database_instances=1)
    scripted.reply_intent(web_servers=1, database="mysql", database_instances=1)
    first = generate_blueprint(description="one web server and mysql, called shop", user=requester, save=True)
    second = generate_blueprint(description="one web server and mysql, called shop", user=requester, save=True)
    assert first["version"]["blueprint_name"] == "shop" and first["version"]["number"] == 1
    assert second["version"]["blueprint_name"] == "shop-2" and second["document"]["name"] == "shop-2"
    assert Blueprint.objects.filter(owner=requester).count() == 2


@pytest.mark.django_db
def test_save_follow_up_as_new_version(scripted, requester):
    scripted.reply_intent(web_servers=1, database="mysql", database_instances=1)
    first = generate_blueprint(description="one web server and mysql", user=requester, save=True)
    scripted.reply_intent(web_servers=4, load_balancer=True, database="mysql", database_instances=1)
    second = update_blueprint(
        first["document"],
        "4 web servers behind a balancer",
        user=requester,
        save=True,
        blueprint_id=first["version"]["blueprint_id"],
    )
    assert second["version"]["number"] == 2 and second["version"]["blueprint_id"] == first["version"]["blueprint_id"]
    version = BlueprintVersion.objects.get(pk=second["version"]["id"])
    assert version.parent_id == first["version"]["id"]


@pytest.mark.django_db
def test_save_into_someone_elses_blueprint_is_denied(scripted, requester, other_requester):
    scripted.reply_intent(web_servers=1)
    first = generate_blueprint(description="one web server", user=requester, save=True)
    scripted.reply_intent(web_servers=2)
    with pytest.raises(PermissionDenied):
        update_blueprint(
            first["document"],
            "two web servers",
            user=other_requester,
            save=True,
            blueprint_id=first["version"]["blueprint_id"],
        )


def test_save_without_user_is_refused(scripted):
    with pytest.raises(PermissionDenied):
        generate_blueprint(description="one web server", save=True)
    assert scripted.requests == []


URL = "/api/v1/blueprints/generate-blueprint"


@pytest.mark.django_db
def test_api_generates(scripted, requester_api):
    scripted.reply_intent(web_servers=2, load_balancer=True, cache="redis")
    response = requester_api.post(URL, {"description": "two web servers, a load balancer and redis"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["valid"] and body["document"]["version"] == "1.0"
    assert body["intent"]["cache"] == "redis"


@pytest.mark.django_db
def test_api_save_returns_201_with_version(scripted, requester_api):
    scripted.reply_intent(web_servers=1)
    response = requester_api.post(URL, {"description": "one web server", "save": True}, format="json")
    assert response.status_code == 201
    assert response.json()["version"]["number"] == 1


@pytest.mark.django_db
def test_api_requires_authentication(scripted, api):
    response = api.post(URL, {"description": "one web server"}, format="json")
    assert response.status_code in (401, 403)
    assert scripted.requests == []


@pytest.mark.django_db
def test_api_model_down_is_503(settings, dead_url, no_backoff, requester_api):
    settings.LLM_BASE_URL = dead_url
    response = requester_api.post(URL, {"description": "one web server"}, format="json")
    assert response.status_code == 503
    assert response.json()["error"] == "llm_unavailable"
    assert dead_url in response.json()["message"]


@pytest.mark.django_db
def test_api_generation_failure_is_422(scripted, requester_api):
    scripted.reply_content("nope")
    scripted.reply_content("still nope")
    response = requester_api.post(URL, {"description": "one web server"}, format="json")
    assert response.status_code == 422
    assert response.json()["error"] == "generation_failed"


@pytest.mark.django_db
def test_api_rejects_empty_and_bad_current(scripted, requester_api):
    assert requester_api.post(URL, {"description": ""}, format="json").status_code == 400
    response = requester_api.post(URL, {"description": "add redis", "current": {"name": "x"}}, format="json")
    assert response.status_code == 400
    assert scripted.requests == []

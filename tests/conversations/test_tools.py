"""The tool registry: schemas, permissions of the requesting user, errors as data, and the HTTP interface."""

from __future__ import annotations

import inspect

import pytest
from jsonschema import Draft202012Validator
from rest_framework.test import APIClient

from blueprints.models import Blueprint
from blueprints.services import blueprint_version_create
from iprs.models import IPR, IPRState
from llm import tools
from llm.tools import TOOLS, ToolContext, execute_for_model, run_tool
from tests.conftest import make_user
from tests.conversations.conftest import WEB_DOC, forbidden_audit_events

SEED_TOOLS = {
    "list_templates",
    "get_template",
    "customize_template",
    "generate_blueprint",
    "get_blueprint",
    "update_blueprint",
    "validate_blueprint",
    "estimate_cost",
    "optimize_costs",
    "security_audit",
    "diff_versions",
    "create_ipr",
    "get_ipr_status",
}
STATE_CHANGING_SERVICES = ("ipr_approve", "ipr_reject", "ipr_deploy", "ipr_open_rollback", "ipr_close", "ipr_abort")


def test_thirteen_tools_with_valid_schemas():
    assert set(TOOLS) == SEED_TOOLS
    for tool in TOOLS.values():
        Draft202012Validator.check_schema(tool.parameters)
        assert tool.parameters["type"] == "object" and tool.description and tool.roles


def test_no_tool_approves_rejects_deploys_or_rolls_back():
    forbidden_words = ("approve", "reject", "deploy", "rollback", "roll_back", "merge")
    assert not [name for name in TOOLS if any(word in name for word in forbidden_words)]
    source = inspect.getsource(tools)
    assert not [name for name in STATE_CHANGING_SERVICES if name in source]


@pytest.mark.django_db
def test_running_every_tool_leaves_an_open_ipr_untouched(requester, stored_blueprint, open_ipr, scripted):
    """Every tool, with valid arguments, run by the IPR's author and by an admin: nothing moves the IPR."""
    admin = make_user("root", "admins")
    scripted.reply_intent(web_servers=3)  # generate_blueprint
    scripted.reply_intent(web_servers=4)  # update_blueprint
    calls = {
        "list_templates": {},
        "get_template": {"template_id": "simple-web-app"},
        "customize_template": {"template_id": "simple-web-app", "name": "from-template"},
        "generate_blueprint": {"description": "three web servers"},
        "get_blueprint": {"blueprint_id": stored_blueprint.blueprint_id},
        "update_blueprint": {"blueprint_id": stored_blueprint.blueprint_id, "instruction": "make it 4 web servers"},
        "validate_blueprint": {"blueprint_id": stored_blueprint.blueprint_id},
        "estimate_cost": {"blueprint_id": stored_blueprint.blueprint_id},
        "optimize_costs": {"blueprint_id": stored_blueprint.blueprint_id, "target_reduction": 0.3},
        "security_audit": {"blueprint_id": stored_blueprint.blueprint_id},
        "diff_versions": {"from_version": stored_blueprint.pk, "to_version": stored_blueprint.pk},
        "get_ipr_status": {"ipr_id": open_ipr.pk},
    }
    assert set(calls) | {"create_ipr"} == SEED_TOOLS
    for name, arguments in calls.items():
        outcome = execute_for_model(name, arguments, ctx=ToolContext(user=requester))
        assert outcome.ok, (name, outcome.error)
    for name in ("get_ipr_status", "get_blueprint", "security_audit"):
        assert execute_for_model(name, calls[name], ctx=ToolContext(user=admin)).ok
    open_ipr.refresh_from_db()
    assert open_ipr.state == IPRState.OPEN
    assert forbidden_audit_events() == []


@pytest.mark.django_db
def test_a_requester_cannot_read_anothers_blueprint_through_a_tool(requester, other_requester, stored_blueprint):
    ctx = ToolContext(user=other_requester)
    for name in ("get_blueprint", "estimate_cost", "security_audit", "validate_blueprint"):
        outcome = execute_for_model(name, {"blueprint_id": stored_blueprint.blueprint_id}, ctx=ctx)
        assert not outcome.ok and outcome.error["error"] == "not_found", name
        assert "web" not in outcome.for_model()  # nothing of the document leaks into the model's context
    outcome = execute_for_model("diff_versions", {"from_version": stored_blueprint.pk, "to_version": 1}, ctx=ctx)
    assert not outcome.ok and outcome.error["error"] == "not_found"


@pytest.mark.django_db
def test_a_reviewer_reads_but_cannot_change_anothers_blueprint(requester, reviewer, stored_blueprint, scripted):
    ctx = ToolContext(user=reviewer)
    assert execute_for_model("get_blueprint", {"blueprint_id": stored_blueprint.blueprint_id}, ctx=ctx).ok
    outcome = execute_for_model(
        "update_blueprint", {"blueprint_id": stored_blueprint.blueprint_id, "instruction": "add redis"}, ctx=ctx
    )
    assert not outcome.ok and outcome.error["error"] == "not_owner"
    assert scripted.requests == []  # refused before any model call
    assert Blueprint.objects.get(pk=stored_blueprint.blueprint_id).head_id == stored_blueprint.pk


@pytest.mark.django_db
def test_roles_are_checked_before_the_handler(stored_blueprint, environment):
    nobody = make_user("nobody")
    outcome = execute_for_model("generate_blueprint", {"description": "one server"}, ctx=ToolContext(user=nobody))
    assert outcome.error["error"] == "tool_permission_denied"
    reviewer = make_user("rev2", "reviewers")
    outcome = execute_for_model(
        "create_ipr",
        {"blueprint_id": stored_blueprint.blueprint_id, "environment": "staging"},
        ctx=ToolContext(user=reviewer),
    )
    assert outcome.error["error"] == "tool_permission_denied"
    assert IPR.objects.count() == 0


@pytest.mark.django_db
def test_argument_errors_come_back_as_data_with_paths(requester):
    ctx = ToolContext(user=requester)
    outcome = execute_for_model("estimate_cost", {"blueprint_id": "five", "extra": 1}, ctx=ctx)
    assert not outcome.ok and outcome.error["error"] == "invalid_arguments"
    paths = {e["path"] for e in outcome.error["details"]["errors"]}
    assert paths == {"$", "$.blueprint_id"}  # additionalProperties at the root, the type at the field
    assert (
        execute_for_model("optimize_costs", {"blueprint_id": 1, "target_reduction": 1.5}, ctx=ctx).error["error"]
        == "invalid_arguments"
    )
    assert execute_for_model("validate_blueprint", {}, ctx=ctx).error["error"] == "invalid_arguments"
    assert execute_for_model("approve_ipr", {"ipr_id": 1}, ctx=ctx).error["error"] == "unknown_tool"
    assert execute_for_model("get_blueprint", "not an object", ctx=ctx).error["error"] == "invalid_arguments"
    assert [c["ok"] for c in ctx.tool_calls] == [False] * 5


@pytest.mark.django_db
def test_tool_output_for_the_model_is_compact_data(requester, stored_blueprint):
    outcome = execute_for_model(
        "get_blueprint", {"blueprint_id": stored_blueprint.blueprint_id}, ctx=ToolContext(user=requester)
    )
    text = outcome.for_model()
    assert text.startswith('{"tool":"get_blueprint","ok":true') and '"document"' not in text
    assert len(text) <= tools.MAX_RESULT_CHARS_FOR_MODEL


@pytest.mark.django_db
def test_create_ipr_from_a_conversation_records_provenance(requester, stored_blueprint, environment):
    ctx = ToolContext(user=requester, conversation_id="c-1", model="qwen", intent={"web_servers": 2}, origin="chat")
    result = run_tool("create_ipr", {"blueprint_id": stored_blueprint.blueprint_id, "environment": "staging"}, ctx=ctx)
    ipr = IPR.objects.get(pk=result["ipr"]["id"])
    assert (ipr.origin, ipr.conversation_id, ipr.state) == ("chat", "c-1", IPRState.OPEN)
    assert ipr.ai_provenance["model"] == "qwen" and ipr.ai_provenance["intent"] == {"web_servers": 2}


# --- HTTP --------------------------------------------------------------------------------------------------------
@pytest.fixture
def as_user():
    def make(user):
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


@pytest.mark.django_db
def test_get_tools_lists_names_schemas_and_roles(requester_api):
    response = requester_api.get("/api/v1/tools")
    assert response.status_code == 200
    assert {t["name"] for t in response.json()} == SEED_TOOLS
    estimate = next(t for t in response.json() if t["name"] == "estimate_cost")
    assert estimate["parameters"]["required"] == ["blueprint_id"] and "requesters" in estimate["roles"]


@pytest.mark.django_db
def test_execute_runs_a_tool_for_the_user(requester_api, stored_blueprint):
    response = requester_api.post(
        "/api/v1/tools/execute",
        {"tool_name": "estimate_cost", "parameters": {"blueprint_id": stored_blueprint.blueprint_id}},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["ok"] and response.json()["result"]["monthly_total"] > 0


@pytest.mark.django_db
def test_execute_maps_errors_to_4xx(requester, other_requester, stored_blueprint, as_user, api):
    mine = {"blueprint_id": stored_blueprint.blueprint_id}
    other = as_user(other_requester)
    cases = [
        (other, {"tool_name": "no_such_tool", "parameters": {}}, 400, "unknown_tool"),
        (other, {"tool_name": "estimate_cost", "parameters": {"blueprint_id": -1}}, 400, "invalid_arguments"),
        (other, {"tool_name": "estimate_cost", "parameters": None}, 400, "invalid_arguments"),
        (other, {"parameters": {}}, 400, "invalid_request"),
        (other, {"tool_name": "get_blueprint", "parameters": mine}, 404, "not_found"),
        (
            as_user(make_user("nobody")),
            {"tool_name": "generate_blueprint", "parameters": {"description": "x"}},
            403,
            "tool_permission_denied",
        ),
    ]
    for client, body, status, code in cases:
        response = client.post("/api/v1/tools/execute", body, format="json")
        assert (response.status_code, response.json()["error"]) == (status, code), body
    response = other.post("/api/v1/tools/execute", ["not", "an", "object"], format="json")
    assert response.status_code == 400
    assert api.post("/api/v1/tools/execute", {"tool_name": "list_templates"}, format="json").status_code == 401
    assert Blueprint.objects.get(pk=stored_blueprint.blueprint_id).head_id == stored_blueprint.pk


@pytest.mark.django_db
def test_diff_versions_between_two_own_versions(requester, stored_blueprint):
    changed = {**WEB_DOC, "resources": [{**WEB_DOC["resources"][0], "count": 3}]}
    second, _ = blueprint_version_create(blueprint_id=stored_blueprint.blueprint_id, author=requester, document=changed)
    result = run_tool(
        "diff_versions",
        {"from_version": stored_blueprint.commit_id, "to_version": second.pk},
        ctx=ToolContext(user=requester),
    )
    assert result["summary"] == "0 added, 1 changed, 0 removed"

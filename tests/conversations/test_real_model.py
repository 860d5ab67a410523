"""The agent against the real local model server (llama.cpp + Qwen GGUF). Protocol-level assertions only: the
action answer is valid under its schema, the reply streams, the tool loop ends within the step limit. Kept to a
few model requests: each costs seconds of CPU."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from blueprints.models import BlueprintVersion
from llm.agent import Agent, AgentState, action_schema, warm_up
from llm.client import ChatDelta, ChatResult, get_client, json_schema_format

pytestmark = [pytest.mark.llm, pytest.mark.django_db]


_warmed: set[str] = set()


@pytest.fixture
def warm_agent(real_model):
    if real_model.base_url not in _warmed:  # the agent's fixed prompts into the server's prompt cache, once
        warm_up(get_client())
        _warmed.add(real_model.base_url)
    return real_model


def test_next_action_is_valid_under_the_schema(warm_agent, requester):
    agent = Agent(user=requester)
    state = AgentState(blueprint_id=12, version_id=30, blueprint_name="shop")
    result = get_client().chat(
        agent.action_messages("how much does this cost per month?", [], state, []),
        response_format=json_schema_format("next_action", action_schema()),
        max_tokens=120,
        temperature=0.0,
    )
    data = json.loads(result.content)
    assert list(Draft202012Validator(action_schema()).iter_errors(data)) == []
    assert result.metrics.tokens_out and result.metrics.tokens_out < 60  # compact, as the examples show


def test_a_routed_turn_generates_a_blueprint_and_streams_the_reply(warm_agent, requester):
    events = list(Agent(user=requester).run("three web servers behind a load balancer with a postgres database"))
    types = [e["type"] for e in events]
    assert types[:3] == ["tool_call", "tool_result", "blueprint"] and types[-1] == "done", events[-1]
    assert types.count("token") >= 2  # streamed in pieces
    version = BlueprintVersion.objects.get(pk=events[2]["version_id"])
    assert version.blueprint.owner == requester and events[-1]["content"]


def test_the_model_decided_loop_ends_within_the_step_limit(warm_agent, requester):
    agent = Agent(user=requester, max_steps=1)
    events = list(agent.run("which templates are there, and what does the first one contain?"))
    assert events[-1]["type"] == "done" and agent.result.steps <= 1
    assert [e["type"] for e in events].count("tool_call") == agent.result.steps
    assert all(c["decided_by"] in ("model", "native") for c in agent.result.tool_calls)


def test_client_streams_the_reply_prompt(warm_agent, requester):
    agent = Agent(user=requester)
    stream = list(get_client().stream(agent.reply_messages("hello", [], AgentState(), []), max_tokens=24))
    assert any(isinstance(e, ChatDelta) for e in stream) and isinstance(stream[-1], ChatResult)
    assert stream[-1].metrics.ttft_s is not None

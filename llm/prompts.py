"""Prompts. The intent prompt prefix is fixed text so llama.cpp can keep its KV cache warm between requests."""

from __future__ import annotations

import json
from typing import Any

INTENT_SYSTEM_PROMPT = """\
You read a request for server infrastructure and answer with one compact JSON object describing its structure.
Fields:
- web_servers: machines or containers serving web, app, API, frontend or backend traffic
- worker_servers: machines for background jobs, queues, batch processing or workers
- load_balancer: true when a load balancer, reverse proxy or traffic spreading over several web servers is wanted
- database: postgresql, mysql, mariadb, mongodb, or none when no database is wanted
- database_instances: database machines in total (primary plus replicas), 0 when database is none
- database_ha: true when the database must be highly available, replicated or fail over
- cache: redis, valkey, memcached, or none
- kubernetes_nodes: nodes of a Kubernetes (k8s) cluster, 0 when no cluster is wanted; they are not worker_servers
Use the numbers the request gives. For a part that is wanted without a number, use 1 (2 web servers when behind a \
load balancer). A plain "database" is postgresql. Parts the request does not want are 0, false or none.
When the input has "Current:" and "Change:", apply the change to the current JSON and return the whole new JSON."""

# Few-shot turns as real user/assistant messages: the model copies their compact style (~44 output tokens instead
# of ~70 pretty-printed ones), and being fixed text they stay in the server's prompt cache with the system prompt.
INTENT_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "Request: a blog on one server with mysql",
        '{"web_servers":1,"worker_servers":0,"load_balancer":false,"database":"mysql","database_instances":1,'
        '"database_ha":false,"cache":"none","kubernetes_nodes":0}',
    ),
    (
        "Request: four frontend nodes behind an LB, 2 queue workers, redis, and a replicated postgres primary with "
        "two standbys",
        '{"web_servers":4,"worker_servers":2,"load_balancer":true,"database":"postgresql","database_instances":3,'
        '"database_ha":true,"cache":"redis","kubernetes_nodes":0}',
    ),
    (
        "Request: k8s cluster, 5 nodes, plus a mongodb",
        '{"web_servers":0,"worker_servers":0,"load_balancer":false,"database":"mongodb","database_instances":1,'
        '"database_ha":false,"cache":"none","kubernetes_nodes":5}',
    ),
    (
        "Request: three batch processing machines and memcached, no database",
        '{"web_servers":0,"worker_servers":3,"load_balancer":false,"database":"none","database_instances":0,'
        '"database_ha":false,"cache":"memcached","kubernetes_nodes":0}',
    ),
    (
        'Current: {"web_servers":2,"worker_servers":0,"load_balancer":true,"database":"mariadb",'
        '"database_instances":1,"database_ha":false,"cache":"none","kubernetes_nodes":0}\n'
        "Change: scale to 6 app servers and make the database highly available",
        '{"web_servers":6,"worker_servers":0,"load_balancer":true,"database":"mariadb","database_instances":2,'
        '"database_ha":true,"cache":"none","kubernetes_nodes":0}',
    ),
)

INTENT_MAX_TOKENS = 120


def intent_messages(description: str, current: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Messages for one intent request: a new request, or a change to a current intent."""
    if current is None:
        user = f"Request: {description.strip()}"
    else:
        user = f"Current: {json.dumps(current, separators=(',', ':'))}\nChange: {description.strip()}"
    return [*fixed_prefix(), {"role": "user", "content": user}]


def fixed_prefix() -> list[dict[str, str]]:
    """The system prompt and the example turns: identical on every request (the warm-up sends exactly these)."""
    messages = [{"role": "system", "content": INTENT_SYSTEM_PROMPT}]
    for user, assistant in INTENT_EXAMPLES:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages


def repair_messages(messages: list[dict[str, str]], answer: str, problems: list[str]) -> list[dict[str, str]]:
    """The one repair round: show the model its answer and exactly what is wrong with it."""
    return [
        *messages,
        {"role": "assistant", "content": answer},
        {
            "role": "user",
            "content": "That JSON is not acceptable: "
            + "; ".join(problems)
            + ". Answer again with the whole corrected JSON object only.",
        },
    ]

"""The agent's tools as data: name, description, JSON schema, required roles, and a handler calling a service.

Every handler runs with the *requesting user's* permissions: it passes the user to a service or selector, which
scopes what may be read or changed, exactly as the REST API does. No tool approves, rejects, deploys, rolls back,
merges or closes anything (tests assert it). Arguments are checked against the tool's JSON schema before the
handler runs; every refusal is an ``ApplicationError`` that the agent hands back to the model as data.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from aicdn_project import metrics, roles
from aicdn_project.errors import ApplicationError, NotFound, PermissionDenied

logger = logging.getLogger(__name__)

ANY_ROLE = roles.ALL_ROLES
# Who may create blueprints (blueprints.services.blueprint_create) and open IPRs (iprs.policy.check_can_open).
BLUEPRINT_WRITERS = (roles.REQUESTERS, roles.OPERATORS, roles.REVIEWERS)
IPR_OPENERS = (roles.REQUESTERS, roles.OPERATORS)
MAX_RESULT_CHARS_FOR_MODEL = 1200
# Large or bookkeeping fields a tool returns to API callers but not to the model (its context is small).
_NOT_FOR_MODEL = frozenset({"document", "structured", "template", "tokens", "intent"})


class UnknownTool(ApplicationError):
    status_code = 400
    default_code = "unknown_tool"


class InvalidArguments(ApplicationError):
    status_code = 400
    default_code = "invalid_arguments"


@dataclass
class ToolContext:
    """Who is asking, and what the conversation knows (for provenance of IPRs opened from a chat)."""

    user: Any
    conversation_id: str | None = None
    client: Any = None  # an llm.client.LLMClient for the tools that call the model; None = the shared client
    model: str = ""
    intent: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    origin: str = "api"  # "chat" when the agent runs the tool


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    permission: str  # a readable name for what the tool needs, shown by GET /api/v1/tools
    roles: tuple[str, ...]
    handler: Callable[[ToolContext, dict[str, Any]], dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "permission": self.permission,
            "roles": list(self.roles),
        }

    def openai_spec(self) -> dict[str, Any]:
        """The OpenAI `tools` entry, for servers that return native tool_calls."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


def _schema(properties: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
        **extra,
    }


BLUEPRINT_ID = {"type": "integer", "minimum": 1, "description": "id of a stored blueprint"}
VERSION_REF = {"type": ["integer", "string"], "description": "a version id or a commit id"}


# --- helpers shared by handlers -------------------------------------------------------------------------------------
def _version_info(version: Any) -> dict[str, Any]:
    return {
        "blueprint_id": version.blueprint_id,
        "blueprint_name": version.blueprint.name,
        "version_id": version.pk,
        "number": version.number,
        "commit_id": version.commit_id,
    }


def _head(ctx: ToolContext, blueprint_id: int) -> Any:
    from blueprints.selectors import blueprint_get

    blueprint = blueprint_get(user=ctx.user, blueprint_id=blueprint_id)
    if blueprint.head is None:
        raise NotFound(f"blueprint {blueprint_id} has no version yet", code="no_version")
    return blueprint.head


def _resource_summary(document: dict[str, Any]) -> list[str]:
    return [
        f"{res['name']} ({res['type']}" + (f" x{res['count']}" if int(res.get("count", 1)) > 1 else "") + ")"
        for res in document.get("resources") or []
    ]


# --- handlers -------------------------------------------------------------------------------------------------------
def _list_templates(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    from blueprints.analysis.templates import list_templates

    category = args.get("category")
    items = [
        {"id": t["id"], "name": t["name"], "category": t["category"], "description": t["description"]}
        for t in list_templates()
        if not category or t["category"] == category
    ]
    return {"templates": items, "summary": f"{len(items)} templates: " + ", ".join(t["id"] for t in items)}


def _get_template(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    from blueprints.analysis.templates import get_template

    template = get_template(args["template_id"])
    return {"template": template, "summary": f"{template['id']}: {template['description']}"}


def _customize_template(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    from blueprints.analysis.services import template_customize

    result = template_customize(
        user=ctx.user,
        template_id=args["template_id"],
        parameters=args.get("parameters") or {},
        save=args.get("save", True),
        name=args.get("name"),
    )
    out: dict[str, Any] = {
        "template": result["template"],
        "parameters": result["parameters"],
        "monthly_cost": result["monthly_cost"],
        "resources": _resource_summary(result["document"]),
        "summary": f"rendered {result['template']}, about {result['monthly_cost']} per month",
    }
    if result["version"]:
        ref = result["version"]
        out["blueprint"] = {"blueprint_id": ref["blueprint_id"], "version_id": ref["id"], "commit_id": ref["commit_id"]}
    else:
        out["document"] = result["document"]
    return out


def _generation_output(result: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    ctx.intent = result["intent"]
    ctx.model = result.get("model") or ctx.model
    version = result["version"]
    return {
        "blueprint": {
            "blueprint_id": version["blueprint_id"],
            "version_id": version["id"],
            "commit_id": version["commit_id"],
        },
        "name": version["blueprint_name"],
        "resources": _resource_summary(result["document"]),
        "intent": result["intent"],
        "assumptions": result["assumptions"],
        "tokens": {"in": result["timings"].get("tokens_in"), "out": result["timings"].get("tokens_out")},
        "summary": f"saved {version['blueprint_name']} version {version['number']} ({version['commit_id']})",
    }


def _generate_blueprint(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    from llm.generation import generate_blueprint

    result = generate_blueprint(description=args["description"], user=ctx.user, save=True, client=ctx.client)
    return _generation_output(result, ctx)


def _update_blueprint(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    from llm.generation import update_blueprint

    head = _head(ctx, args["blueprint_id"])
    if not (head.blueprint.owner_id == ctx.user.pk or roles.is_admin(ctx.user)):
        # Reviewers may read every blueprint but change only their own (blueprint_version_create checks it too).
        raise PermissionDenied(f"blueprint {args['blueprint_id']} is not yours to change", code="not_owner")
    result = update_blueprint(
        head.document,
        args["instruction"],
        user=ctx.user,
        save=True,
        blueprint_id=head.blueprint_id,
        client=ctx.client,
    )
    return _generation_output(result, ctx)


def _get_blueprint(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    from blueprints.selectors import version_get

    if args.get("version") not in (None, ""):
        version = version_get(user=ctx.user, ref=args["version"], blueprint_id=args["blueprint_id"])
    else:
        version = _head(ctx, args["blueprint_id"])
    resources = _resource_summary(version.document)
    return {
        **_version_info(version),
        "document": version.document,
        "resources": resources,
        "summary": f"{version.blueprint.name} version {version.number}: " + ", ".join(resources),
    }


def _validate_blueprint(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    from blueprints.services import blueprint_validate

    if "yaml" in args:
        result = blueprint_validate(source=args["yaml"]).as_dict()
    else:
        result = blueprint_validate(document=_head(ctx, args["blueprint_id"]).document).as_dict()
    errors = result["errors"]
    summary = "valid" if result["valid"] else f"invalid: {len(errors)} error(s); first: {errors[0]['message']}"
    return {**result, "summary": summary}


def _estimate_cost(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    from blueprints.analysis.services import version_cost

    version = _head(ctx, args["blueprint_id"])
    result = version_cost(user=ctx.user, ref=version.pk)
    return {
        "currency": result["currency"],
        "monthly_total": result["monthly_total"],
        "by_resource": result["by_resource"],
        "reference_cloud_total": result["reference_cloud_total"],
        "summary": f"{result['monthly_total']} {result['currency']} per month",
    }


def _optimize_costs(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    from blueprints.analysis.services import optimize_costs

    result = optimize_costs(
        user=ctx.user,
        blueprint_id=args["blueprint_id"],
        target_reduction=args.get("target_reduction", 0.2),
        save=args.get("save", False),
    )
    out = {
        "recommendations": [
            {"kind": r["kind"], "resource": r["resource"], "monthly_saving": r.get("monthly_saving")}
            for r in result["recommendations"]
        ],
        "current_monthly": result["current_monthly"],
        "optimized_monthly": result["optimized_monthly"],
        "reduction": result["reduction"],
        "target_reached": result["target_reached"],
        "summary": f"{len(result['recommendations'])} recommendation(s): {result['current_monthly']} -> "
        f"{result['optimized_monthly']} {result['currency']} per month ({result['reduction']:.0%} less)",
    }
    if result["version"]:
        ref = result["version"]
        out["blueprint"] = {"blueprint_id": ref["blueprint_id"], "version_id": ref["id"], "commit_id": ref["commit_id"]}
    return out


def _security_audit(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    from blueprints.analysis.services import security_audit

    result = security_audit(user=ctx.user, blueprint_id=args["blueprint_id"])
    top = [
        {"rule_id": f["rule_id"], "severity": f["severity"], "resource": f["resource"], "title": f.get("title", "")}
        for f in result["findings"][:5]
    ]
    counts = {k: v for k, v in result["counts"].items() if v}
    return {
        "counts": result["counts"],
        "max_severity": result["max_severity"],
        "passed": result["passed"],
        "top_findings": top,
        "summary": f"max severity {result['max_severity']}; " + (json.dumps(counts) if counts else "no findings"),
    }


def _diff_versions(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    from blueprints.selectors import version_get
    from blueprints.services import version_diff

    old = version_get(user=ctx.user, ref=args["from_version"])
    new = version_get(user=ctx.user, ref=args["to_version"])
    result = version_diff(old=old, new=new)
    structured = result["structured"]
    return {
        "from": result["from"],
        "to": result["to"],
        "structured": structured,
        "summary": structured["summary"],
    }


def _create_ipr(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    from engines.selectors import environment_get
    from iprs.models import IPROrigin
    from iprs.services import ipr_open

    head = _head(ctx, args["blueprint_id"])
    environment = environment_get(name=args["environment"])
    title = (args.get("title") or "").strip() or f"{head.blueprint.name} {head.commit_id} to {environment.name}"
    chat = ctx.origin == "chat" or ctx.conversation_id is not None
    ipr = ipr_open(
        author=ctx.user,
        blueprint_version=head,
        environment=environment,
        title=title,
        description=args.get("description") or "",
        origin=IPROrigin.CHAT if chat else IPROrigin.API,
        conversation_id=ctx.conversation_id,
        ai_provenance={"model": ctx.model or "", "intent": ctx.intent, "tool_calls": ctx.tool_calls[-10:]}
        if chat
        else None,
    )
    return {
        "ipr": {"id": ipr.pk, "state": ipr.state, "environment": environment.name, "title": ipr.title},
        "plan": (ipr.plan or {}).get("summary", ""),
        "summary": f"opened IPR #{ipr.pk} ({ipr.state}) for {environment.name}; it needs human review and approval",
    }


def _get_ipr_status(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    from engines.selectors import deployment_progress
    from iprs import policy
    from iprs.selectors import ipr_get

    ipr = ipr_get(user=ctx.user, ipr_id=args["ipr_id"])
    status = policy.approval_status(ipr, policy.policy_for(ipr.environment)).as_dict()
    progress = deployment_progress(ipr_id=ipr.pk)
    deployment = None
    if progress is not None:
        done = sum(1 for r in progress["resources"] if r["status"] in ("succeeded", "done", "skipped"))
        deployment = {"status": progress["status"], "resources": len(progress["resources"]), "finished": done}
    return {
        "ipr": {"id": ipr.pk, "state": ipr.state, "environment": ipr.environment.name, "title": ipr.title},
        "approvals": {"required": status["required"], "given": len(status["approvals"])},
        "plan": (ipr.plan or {}).get("summary", ""),
        "deployment": deployment,
        "summary": f"IPR #{ipr.pk} is {ipr.state} ({len(status['approvals'])}/{status['required']} approvals)",
    }


# --- the registry ---------------------------------------------------------------------------------------------------
TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            "list_templates",
            "List the blueprint templates (id, name, category, description).",
            _schema({"category": {"type": "string", "description": "only templates of this category"}}),
            "templates.read",
            ANY_ROLE,
            _list_templates,
        ),
        Tool(
            "get_template",
            "Show one template and its parameters.",
            _schema({"template_id": {"type": "string", "minLength": 1, "maxLength": 100}}, ("template_id",)),
            "templates.read",
            ANY_ROLE,
            _get_template,
        ),
        Tool(
            "customize_template",
            "Render a template with parameters and save it as a new blueprint of the user.",
            _schema(
                {
                    "template_id": {"type": "string", "minLength": 1, "maxLength": 100},
                    "parameters": {"type": "object", "description": "template parameter values"},
                    "name": {"type": "string", "maxLength": 63, "description": "name of the new blueprint"},
                    "save": {"type": "boolean", "description": "save as a blueprint (default true)"},
                },
                ("template_id",),
            ),
            "blueprints.create",
            BLUEPRINT_WRITERS,
            _customize_template,
        ),
        Tool(
            "generate_blueprint",
            "Create a new blueprint from a description of the infrastructure the user wants.",
            _schema({"description": {"type": "string", "minLength": 1, "maxLength": 4000}}, ("description",)),
            "blueprints.create",
            BLUEPRINT_WRITERS,
            _generate_blueprint,
        ),
        Tool(
            "get_blueprint",
            "Show a stored blueprint (its head version, or a given version).",
            _schema({"blueprint_id": BLUEPRINT_ID, "version": VERSION_REF}, ("blueprint_id",)),
            "blueprints.read",
            ANY_ROLE,
            _get_blueprint,
        ),
        Tool(
            "update_blueprint",
            "Change a stored blueprint as instructed (add a cache, scale servers, move environment): a new version.",
            _schema(
                {"blueprint_id": BLUEPRINT_ID, "instruction": {"type": "string", "minLength": 1, "maxLength": 4000}},
                ("blueprint_id", "instruction"),
            ),
            "blueprints.change",
            BLUEPRINT_WRITERS,
            _update_blueprint,
        ),
        Tool(
            "validate_blueprint",
            "Validate a stored blueprint, or blueprint YAML text.",
            _schema(
                {"blueprint_id": BLUEPRINT_ID, "yaml": {"type": "string", "minLength": 1, "maxLength": 200_000}},
                anyOf=[{"required": ["blueprint_id"]}, {"required": ["yaml"]}],
            ),
            "blueprints.read",
            ANY_ROLE,
            _validate_blueprint,
        ),
        Tool(
            "estimate_cost",
            "Estimate the monthly cost of a stored blueprint.",
            _schema({"blueprint_id": BLUEPRINT_ID}, ("blueprint_id",)),
            "blueprints.read",
            ANY_ROLE,
            _estimate_cost,
        ),
        Tool(
            "optimize_costs",
            "Recommend cheaper settings for a stored blueprint; save=true stores them as a new version.",
            _schema(
                {
                    "blueprint_id": BLUEPRINT_ID,
                    "target_reduction": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "exclusiveMaximum": 1,
                        "description": "wanted saving as a fraction, 0.3 = 30 %",
                    },
                    "save": {"type": "boolean"},
                },
                ("blueprint_id",),
            ),
            "blueprints.read",
            ANY_ROLE,
            _optimize_costs,
        ),
        Tool(
            "security_audit",
            "Check a stored blueprint against the security rules.",
            _schema({"blueprint_id": BLUEPRINT_ID}, ("blueprint_id",)),
            "blueprints.read",
            ANY_ROLE,
            _security_audit,
        ),
        Tool(
            "diff_versions",
            "Compare two blueprint versions.",
            _schema({"from_version": VERSION_REF, "to_version": VERSION_REF}, ("from_version", "to_version")),
            "blueprints.read",
            ANY_ROLE,
            _diff_versions,
        ),
        Tool(
            "create_ipr",
            "Open an Infrastructure Pull Request proposing a blueprint for an environment; people review it.",
            _schema(
                {
                    "blueprint_id": BLUEPRINT_ID,
                    "environment": {"type": "string", "minLength": 1, "maxLength": 63},
                    "title": {"type": "string", "maxLength": 200},
                    "description": {"type": "string", "maxLength": 4000},
                },
                ("blueprint_id", "environment"),
            ),
            "iprs.open",
            IPR_OPENERS,
            _create_ipr,
        ),
        Tool(
            "get_ipr_status",
            "Show an IPR's state, approvals and deployment progress.",
            _schema({"ipr_id": {"type": "integer", "minimum": 1}}, ("ipr_id",)),
            "iprs.read",
            ANY_ROLE,
            _get_ipr_status,
        ),
    )
}


@cache
def _validator(name: str) -> Draft202012Validator:
    schema = TOOLS[name].parameters
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def tool_list() -> list[dict[str, Any]]:
    return [tool.as_dict() for tool in TOOLS.values()]


def get_tool(name: Any) -> Tool:
    tool = TOOLS.get(name) if isinstance(name, str) else None
    if tool is None:
        raise UnknownTool(
            f"there is no tool named {str(name)[:60]!r}; tools: {', '.join(TOOLS)}",
            details={"tools": list(TOOLS)},
        )
    return tool


def argument_errors(tool: Tool, arguments: Any) -> list[dict[str, str]]:
    """Every schema violation, each with a JSON path ("$.blueprint_id") and a message."""
    if not isinstance(arguments, dict):
        return [{"path": "$", "message": "arguments must be a JSON object"}]
    errors = []
    for error in sorted(_validator(tool.name).iter_errors(arguments), key=lambda e: list(e.absolute_path)):
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        errors.append({"path": path, "message": error.message[:300]})
    return errors


def run_tool(name: Any, arguments: Any, *, ctx: ToolContext) -> dict[str, Any]:
    """Check and run one tool for `ctx.user`; raises ApplicationError (unknown tool, bad arguments, denied, ...)."""
    try:
        tool = get_tool(name)
    except UnknownTool:
        metrics.LLM_TOOL_CALLS.labels(tool="unknown", outcome="invalid_arguments").inc()
        raise
    label = tool.name
    user = ctx.user
    if user is None or not getattr(user, "is_authenticated", False):
        metrics.LLM_TOOL_CALLS.labels(tool=label, outcome="denied").inc()
        raise PermissionDenied("tools run for an authenticated user", code="not_authenticated")
    errors = argument_errors(tool, arguments)
    if errors:
        metrics.LLM_TOOL_CALLS.labels(tool=label, outcome="invalid_arguments").inc()
        raise InvalidArguments(
            f"invalid arguments for {tool.name}: " + "; ".join(f"{e['path']}: {e['message']}" for e in errors),
            details={"errors": errors},
        )
    if not roles.has_role(user, *tool.roles):
        metrics.LLM_TOOL_CALLS.labels(tool=label, outcome="denied").inc()
        raise PermissionDenied(
            f"{tool.name} needs one of the roles {', '.join(tool.roles)}",
            code="tool_permission_denied",
            details={"tool": tool.name, "roles": list(tool.roles)},
        )
    try:
        result = tool.handler(ctx, arguments)
    except PermissionDenied:
        metrics.LLM_TOOL_CALLS.labels(tool=label, outcome="denied").inc()
        raise
    except ApplicationError:
        metrics.LLM_TOOL_CALLS.labels(tool=label, outcome="error").inc()
        raise
    metrics.LLM_TOOL_CALLS.labels(tool=label, outcome="ok").inc()
    return result


@dataclass
class ToolOutcome:
    """One executed call as the agent records it: never raises, errors are data."""

    tool: str
    arguments: Any
    ok: bool
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    duration_ms: float

    def record(self) -> dict[str, Any]:
        """What is stored on the message and in an IPR's provenance (no full documents)."""
        return {
            "tool": self.tool,
            "arguments": self.arguments,
            "ok": self.ok,
            "summary": (self.result or {}).get("summary") if self.ok else None,
            "error": self.error,
            "duration_ms": self.duration_ms,
        }

    def for_model(self) -> str:
        """The result as the model reads it: compact JSON data, large fields left out, length capped."""
        if not self.ok:
            payload: dict[str, Any] = {"tool": self.tool, "ok": False, "error": self.error}
        else:
            data = {k: v for k, v in (self.result or {}).items() if k not in _NOT_FOR_MODEL}
            payload = {"tool": self.tool, "ok": True, "result": data}
        text = json.dumps(payload, separators=(",", ":"), default=str)
        if len(text) > MAX_RESULT_CHARS_FOR_MODEL:
            text = text[: MAX_RESULT_CHARS_FOR_MODEL - 15] + '..."(truncated)'
        return text


def execute_for_model(name: Any, arguments: Any, *, ctx: ToolContext) -> ToolOutcome:
    """Run a tool for the agent: every failure (including a bug in a handler) comes back as data, not an exception."""
    started = time.monotonic()
    tool_name = name if isinstance(name, str) else str(name)
    error: dict[str, Any] | None
    try:
        result = run_tool(name, arguments, ctx=ctx)
        ok, error = True, None
    except ApplicationError as exc:
        result = None
        ok, error = False, {"error": exc.code, "message": exc.message[:500]}
        if isinstance(exc, InvalidArguments):
            error["details"] = exc.details
    except Exception:  # a handler bug must not end the conversation; it is logged with its traceback
        logger.exception("tool %s failed", tool_name)
        metrics.LLM_TOOL_CALLS.labels(tool=tool_name if tool_name in TOOLS else "unknown", outcome="error").inc()
        result = None
        ok, error = False, {"error": "internal_error", "message": f"{tool_name} failed unexpectedly"}
    outcome = ToolOutcome(tool_name[:60], arguments, ok, result, error, round((time.monotonic() - started) * 1000, 1))
    ctx.tool_calls.append(outcome.record())
    return outcome

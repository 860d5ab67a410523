"""The `ai-cdn` commands: each parses its arguments, calls the API, and renders the answer (or its JSON)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from aicdn_project.cli import config
from aicdn_project.cli.client import AUTH, FAILED, NOT_FOUND, OK, UNAVAILABLE, USAGE, Api, CliError

TERMINAL_STATES = {"deployed", "failed", "rejected", "closed", "superseded"}
DONE_STATUSES = {"done", "succeeded", "success", "ok", "applied", "deployed", "no-op", "noop", "skipped", "deleted"}
FAILED_STATUSES = {"failed", "error"}
# Chat `error` events that mean the model server (not the request) is the problem: exit 6 like a down API server.
UNAVAILABLE_CHAT_ERRORS = {"llm_unavailable", "llm_timeout", "service_unavailable", "timeout"}


class Out:
    """Human output on stdout via rich, or exactly one JSON document with --json."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self.console = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def data(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")

    def say(self, text: str = "") -> None:
        if not self.json:
            self.console.print(text, markup=False)

    def table(self, columns: list[str], rows: list[list[Any]]) -> None:
        table = Table(*columns, box=None, pad_edge=False, header_style="bold")
        for row in rows:
            table.add_row(*["" if v is None else str(v) for v in row])
        self.console.print(table)


def read_source(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file", NOT_FOUND) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read ({exc})", FAILED) from None


# --- login / logout -------------------------------------------------------------------------------------------------
def cmd_login(api: Api, args: argparse.Namespace, out: Out) -> int:
    username = args.username or input("Username: ")
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("Password: ")
    if not username or not password:
        raise CliError("a username and a password are required", USAGE)
    try:
        answer = api.post("/api/v1/auth/token", {"username": username, "password": password})
    except CliError as exc:
        if exc.payload.get("status") == 400:  # DRF answers a wrong password with a validation error
            raise CliError(f"login to {api.url} failed: wrong username or password", AUTH, exc.payload) from None
        raise
    token = answer.get("token")
    if not token:
        raise CliError("the server did not return a token", FAILED)
    path = config.save({"url": api.url, "token": token, "username": username})
    if out.json:
        out.data({"url": api.url, "username": username, "config": str(path)})
    else:
        out.say(f"Logged in to {api.url} as {username} (token saved in {path})")
    return OK


def cmd_logout(api: Api, args: argparse.Namespace, out: Out) -> int:
    stored = config.load()
    had = bool(stored.pop("token", None))
    config.save(stored)
    if out.json:
        out.data({"logged_out": had})
    else:
        out.say("Token removed." if had else "No stored token.")
    return OK


# --- blueprints -------------------------------------------------------------------------------------------------------
def cmd_validate(api: Api, args: argparse.Namespace, out: Out) -> int:
    result = api.post("/api/v1/blueprints/validate", {"source": read_source(args.file)})
    if out.json:
        out.data(result)
    elif result.get("valid"):
        summary = result.get("summary") or {}
        kinds = ", ".join(f"{n} {t}" for t, n in sorted((summary.get("instances") or {}).items()))
        out.say(f"{args.file}: valid blueprint {summary.get('name')!r}, {summary.get('resources')} resources ({kinds})")
    else:
        out.say(f"{args.file}: INVALID, {len(result.get('errors', []))} error(s)")
        for error in result.get("errors", []):
            out.say(f"  {error.get('path', '$')}: {error.get('message')}")
    return OK if result.get("valid") else FAILED


def _find_blueprint(api: Api, name: str, username: str) -> int:
    matches = [b for b in api.paginate("/api/v1/blueprints") if b.get("name") == name]
    mine = [b for b in matches if username and b.get("owner") == username]
    chosen = mine or matches
    if len(chosen) != 1:
        raise CliError(
            f"blueprint {name!r} exists but cannot be picked unambiguously ({len(chosen)} visible); "
            "give --blueprint ID",
            FAILED,
        )
    return int(chosen[0]["id"])


def push_version(api: Api, source: str, *, blueprint_id: int | None, message: str, username: str) -> dict[str, Any]:
    """Create the blueprint (first time) or add a version to it; identical content returns the existing version."""
    body = {"source": source, "message": message}
    if blueprint_id is None:
        try:
            return api.post("/api/v1/blueprints", body)
        except CliError as exc:
            if exc.payload.get("error") != "blueprint_exists":
                raise
            name = (exc.payload.get("details") or {}).get("name", "")
            blueprint_id = _find_blueprint(api, name, username)
    return api.post(f"/api/v1/blueprints/{blueprint_id}/versions", body)


def cmd_push(api: Api, args: argparse.Namespace, out: Out) -> int:
    version = push_version(
        api, read_source(args.file), blueprint_id=args.blueprint, message=args.message, username=args.username_hint
    )
    if out.json:
        out.data(version)
    else:
        out.say(
            f"{version.get('blueprint_name')} v{version.get('number')}  commit {version.get('commit_id')}"
            f"  (blueprint {version.get('blueprint')}, version id {version.get('id')})"
        )
    return OK


def _render_plan(out: Out, plan: dict[str, Any]) -> None:
    symbols = {"create": "+", "update": "~", "replace": "-/+", "delete": "-"}
    for item in plan.get("actions", []):
        if item.get("action") in ("noop", "no-op"):
            continue
        out.say(f"  {symbols.get(item.get('action'), '?'):>3} {item.get('name')} ({item.get('type')})")
        for change in item.get("changes", []):
            if isinstance(change, dict):
                where = change.get("field") or change.get("path")
                out.say(f"        {where}: {change.get('old')!r} -> {change.get('new')!r}")
    out.say(f"Plan: {plan.get('summary', '')}")


def _render_cost(out: Out, cost: Any) -> None:
    delta = (cost or {}).get("delta") if isinstance(cost, dict) else None
    if isinstance(delta, dict) and delta.get("new_total") is not None:
        currency = delta.get("currency") or ""
        out.say(
            f"Cost: {delta.get('new_total')} {currency}/month ({delta.get('delta', 0):+} {currency} against "
            f"{delta.get('old_total')})"
        )


def cmd_plan(api: Api, args: argparse.Namespace, out: Out) -> int:
    version = push_version(
        api, read_source(args.file), blueprint_id=args.blueprint, message=args.message, username=args.username_hint
    )
    plan = api.get(f"/api/v1/environments/{args.env}/plan", version=version["commit_id"])
    if out.json:
        out.data({"version": version, "plan": plan})
    else:
        base = plan.get("base_version") or {}
        against = f"deployed commit {base.get('commit_id')}" if base else "nothing deployed"
        out.say(
            f"{version.get('blueprint_name')} commit {version.get('commit_id')} -> environment {args.env} ({against})"
        )
        _render_plan(out, plan.get("plan", plan))
        _render_cost(out, plan.get("cost"))
    return OK


# --- IPRs and deployments ---------------------------------------------------------------------------------------------
def _ipr_line(ipr: dict[str, Any]) -> list[Any]:
    env = ipr.get("environment")
    env = env.get("name") if isinstance(env, dict) else env
    version = ipr.get("blueprint_version")
    version = version.get("commit_id") if isinstance(version, dict) else version
    return [ipr.get("id"), ipr.get("state"), env, version, ipr.get("author"), ipr.get("title")]


def _open_ipr(api: Api, *, version_id: Any, env: str, title: str, kind: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"blueprint_version": version_id, "environment": env, "title": title, "origin": "cli"}
    if kind:
        body["kind"] = kind
    return api.post("/api/v1/iprs", body)


def _review_hint(api: Api, ipr: dict[str, Any]) -> str:
    return f"review it at {api.url}/admin/iprs/ipr/{ipr.get('id')}/change/"


def cmd_deploy(api: Api, args: argparse.Namespace, out: Out) -> int:
    version = push_version(
        api, read_source(args.file), blueprint_id=args.blueprint, message=args.message, username=args.username_hint
    )
    title = args.title or f"Deploy {version.get('blueprint_name')} {version.get('commit_id')} to {args.env}"
    ipr = _open_ipr(api, version_id=version["id"], env=args.env, title=title)
    if not args.wait:
        if out.json:
            out.data(ipr)
        else:
            out.say(f"IPR #{ipr.get('id')} opened ({ipr.get('state')}): {title}")
            out.say(_review_hint(api, ipr))
        return OK
    if not out.json:
        out.say(f"IPR #{ipr.get('id')} opened: waiting for approval and deployment ({_review_hint(api, ipr)})")
    final = wait_for_ipr(api, ipr["id"], out, interval=args.interval, timeout=args.timeout)
    if out.json:
        out.data(final)
    return OK if final.get("state") == "deployed" else FAILED


def _resource_rows(ipr: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-resource progress from the IPR: its deployment's resources, or the plan's actions before it starts."""
    deployment = ipr.get("deployment") or {}
    rows = deployment.get("resources") if isinstance(deployment, dict) else None
    if rows:
        return [r for r in rows if isinstance(r, dict)]
    plan = ipr.get("plan") or {}
    return [
        {"name": a.get("name"), "action": a.get("action"), "status": "pending"}
        for a in plan.get("actions", [])
        if a.get("action") != "noop"
    ]


def _row_line(row: dict[str, Any]) -> str:
    line = f"  {row.get('name')!s:<24} {row.get('action') or ''!s:<8} {row.get('status') or 'pending'}"
    if row.get("error"):
        line += f": {row['error']}"
    return line


def wait_for_ipr(api: Api, ipr_id: Any, out: Out, *, interval: float, timeout: float) -> dict[str, Any]:
    """Poll the IPR until a final state, showing one progress bar per resource on a terminal, one line per resource
    status change otherwise (a log, a pipe, CI), and nothing but the final JSON with --json."""
    deadline = time.monotonic() + timeout
    live = out.console.is_terminal and not out.json
    progress = Progress(
        TextColumn("{task.fields[name]:<24}"),
        BarColumn(bar_width=24),
        TextColumn("{task.fields[action]:<8} {task.fields[status]}"),
        console=out.console,
        disable=not live,
    )
    tasks: dict[str, Any] = {}
    seen: dict[str, str] = {}
    last_state = None
    with progress:
        while True:
            ipr = api.get(f"/api/v1/iprs/{ipr_id}")
            state = ipr.get("state")
            if state != last_state and not out.json:
                progress.console.print(f"IPR #{ipr_id}: {state}", markup=False)
                last_state = state
            for row in _resource_rows(ipr):
                name = str(row.get("name"))
                status = str(row.get("status") or "pending")
                done = status.lower() in DONE_STATUSES or status.lower() in FAILED_STATUSES
                if live:
                    if name not in tasks:
                        tasks[name] = progress.add_task(
                            "", total=1, name=name, action=row.get("action") or "", status=""
                        )
                    label = f"{status}: {row['error']}" if row.get("error") and not done else status
                    progress.update(tasks[name], completed=1 if done else 0, status=label)
                elif not out.json and seen.get(name) != status:
                    out.console.print(_row_line(row), markup=False)
                seen[name] = status
            if state in TERMINAL_STATES:
                if not out.json:
                    reason = ipr.get("failure_reason")
                    progress.console.print(f"IPR #{ipr_id} {state}" + (f": {reason}" if reason else ""), markup=False)
                    if live:
                        for row in _resource_rows(ipr):
                            if str(row.get("status")).lower() in FAILED_STATUSES:
                                progress.console.print(_row_line(row), markup=False)
                return ipr
            if time.monotonic() > deadline:
                raise CliError(f"IPR #{ipr_id} is still {state} after {timeout:g} s; not waiting longer", FAILED)
            time.sleep(interval)


def _deployed_resources(api: Api, env: dict[str, Any]) -> tuple[Any, list[dict[str, Any]] | None]:
    """The IPR that deployed the environment's current version and its deployment's resources (without deletes);
    (None, None) when nothing is deployed or that IPR is not visible to you (requesters see their own IPRs only)."""
    deployed = env.get("deployed_version")
    if not deployed:
        return None, None
    deployed_id = deployed.get("id") if isinstance(deployed, dict) else None
    for ipr in api.paginate("/api/v1/iprs", environment=env.get("name"), state="deployed"):
        version = ipr.get("blueprint_version") or {}
        if deployed_id is None or (isinstance(version, dict) and version.get("id") == deployed_id):
            detail = api.get(f"/api/v1/iprs/{ipr['id']}")
            rows = [r for r in _resource_rows(detail) if r.get("action") != "delete"]
            return ipr["id"], rows
    return None, None


def cmd_status(api: Api, args: argparse.Namespace, out: Out) -> int:
    if args.env:
        env = api.get(f"/api/v1/environments/{args.env}")
        ipr_id, resources = _deployed_resources(api, env)
        if out.json:
            out.data({**env, "deployed_by_ipr": ipr_id, "resources": resources})
            return OK
        deployed = env.get("deployed_version")
        if isinstance(deployed, dict):
            what = f"{deployed.get('blueprint')} v{deployed.get('number')} commit {deployed.get('commit_id')}"
        else:
            what = "nothing deployed"
        out.say(f"{env.get('name')} ({env.get('kind')}, engine {env.get('engine')}): {what}")
        lock = env.get("lock") or {}
        if lock.get("held"):
            out.say(f"  deploy lock held by IPR #{lock.get('holder_ipr')} since {lock.get('acquired_at')}")
        if resources is not None:
            out.say(f"  deployed by IPR #{ipr_id}, {len(resources)} resource(s):")
            out.table(
                ["RESOURCE", "TYPE", "LAST ACTION", "STATUS"],
                [[r.get("name"), r.get("type"), r.get("action"), r.get("status")] for r in resources],
            )
        elif env.get("resources"):
            # The deploying IPR is not visible to this user: show the environment's recorded state instead.
            out.say(f"  {len(env['resources'])} recorded resource(s):")
            out.table(["RESOURCE", "TYPE", "STATUS"], [[r["name"], r["type"], r["status"]] for r in env["resources"]])
        return OK
    envs = list(api.paginate("/api/v1/environments"))
    if out.json:
        out.data(envs)
        return OK
    rows = []
    for env in envs:
        deployed = env.get("deployed_version")
        deployed = deployed.get("commit_id") if isinstance(deployed, dict) else deployed
        held = (env.get("lock") or {}).get("held")
        lock = f"IPR #{env['lock'].get('holder_ipr')}" if held else ""
        rows.append([env.get("name"), env.get("kind"), env.get("engine"), deployed or "(nothing deployed)", lock])
    out.table(["ENVIRONMENT", "KIND", "ENGINE", "DEPLOYED", "DEPLOYING"], rows)
    return OK


def cmd_iprs_list(api: Api, args: argparse.Namespace, out: Out) -> int:
    iprs = list(api.paginate("/api/v1/iprs", environment=args.env, state=args.state))
    if out.json:
        out.data(iprs)
    else:
        out.table(["ID", "STATE", "ENV", "VERSION", "AUTHOR", "TITLE"], [_ipr_line(i) for i in iprs])
    return OK


def cmd_iprs_show(api: Api, args: argparse.Namespace, out: Out) -> int:
    ipr = api.get(f"/api/v1/iprs/{args.id}")
    if out.json:
        out.data(ipr)
        return OK
    ident, state, env, version, author, title = _ipr_line(ipr)
    out.say(f"IPR #{ident}: {title}\n  state {state}, environment {env}, version {version}, author {author}")
    if ipr.get("plan"):
        _render_plan(out, ipr["plan"])
    if ipr.get("failure_reason"):
        out.say(f"  failure: {ipr['failure_reason']}")
    return OK


def _review(api: Api, args: argparse.Namespace, out: Out, action: str) -> int:
    ipr = api.post(f"/api/v1/iprs/{args.id}/{action}", {"comment": args.comment or ""})
    if out.json:
        out.data(ipr)
    else:
        out.say(f"IPR #{args.id}: {action} recorded; state {ipr.get('state')}")
    return OK


def cmd_iprs_approve(api: Api, args: argparse.Namespace, out: Out) -> int:
    return _review(api, args, out, "approve")


def cmd_iprs_reject(api: Api, args: argparse.Namespace, out: Out) -> int:
    return _review(api, args, out, "reject")


def cmd_iprs_deploy(api: Api, args: argparse.Namespace, out: Out) -> int:
    ipr = api.post(f"/api/v1/iprs/{args.id}/deploy", {})
    if not args.wait:
        if out.json:
            out.data(ipr)
        else:
            out.say(f"IPR #{args.id}: deployment {ipr.get('state')}")
        return OK
    final = wait_for_ipr(api, args.id, out, interval=args.interval, timeout=args.timeout)
    if out.json:
        out.data(final)
    return OK if final.get("state") == "deployed" else FAILED


def cmd_rollback(api: Api, args: argparse.Namespace, out: Out) -> int:
    body = {"to": args.to, "environment": args.env, "emergency": bool(args.emergency), "origin": "cli"}
    ipr = api.post("/api/v1/iprs/rollback", body)
    if out.json:
        out.data(ipr)
    else:
        out.say(f"IPR #{ipr.get('id')} opened ({ipr.get('state')}): {ipr.get('title')}")
        out.say(_review_hint(api, ipr))
    return OK


# --- templates ------------------------------------------------------------------------------------------------------
def cmd_templates_list(api: Api, args: argparse.Namespace, out: Out) -> int:
    templates = list(api.paginate("/api/v1/templates"))
    if out.json:
        out.data(templates)
    else:
        out.table(
            ["ID", "CATEGORY", "NAME", "DESCRIPTION"],
            [[t.get("id"), t.get("category"), t.get("name"), t.get("description")] for t in templates],
        )
    return OK


def cmd_templates_show(api: Api, args: argparse.Namespace, out: Out) -> int:
    template = api.get(f"/api/v1/templates/{args.id}")
    if out.json:
        out.data(template)
        return OK
    out.say(f"{template.get('id')}: {template.get('name')} ({template.get('category')})\n{template.get('description')}")
    params = template.get("parameters") or {}
    if params:
        out.table(
            ["PARAMETER", "TYPE", "DEFAULT", "DESCRIPTION"],
            [[k, p.get("type"), p.get("default"), p.get("description", "")] for k, p in params.items()],
        )
    return OK


def parse_assignment(text: str) -> tuple[str, Any]:
    """`name=value`; the value is read as JSON when it is JSON (3, true, "x"), else kept as a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise CliError(f"--set {text!r}: expected NAME=VALUE", USAGE)
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def cmd_templates_customize(api: Api, args: argparse.Namespace, out: Out) -> int:
    params = dict(parse_assignment(item) for item in args.set or [])
    result = api.post(f"/api/v1/templates/{args.id}/customize", {"parameters": params})
    document = result.get("document")
    if not isinstance(document, dict):
        raise CliError("the server's answer has no blueprint document", FAILED, {"answer": result})
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    if out.json:
        out.data(result)
    elif args.out:
        out.say(f"blueprint {document.get('name')!r} written to {args.out} (about ${result.get('monthly_cost')}/month)")
    else:
        sys.stdout.write(text)
    return OK


# --- chat -------------------------------------------------------------------------------------------------------------
def _token_text(data: Any) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, dict):
        for key in ("text", "token", "delta", "content"):
            if isinstance(data.get(key), str):
                return data[key]
    return ""


def cmd_chat(api: Api, args: argparse.Namespace, out: Out) -> int:
    body: dict[str, Any] = {"message": args.message}
    if args.conversation:
        body["conversation_id"] = args.conversation
    events: list[dict[str, Any]] = []
    for event, data in api.stream("/api/v1/conversation/chat/stream", body):
        events.append({"event": event, "data": data})
        if event == "error":
            message = data.get("message") if isinstance(data, dict) else str(data)
            code = data.get("error") if isinstance(data, dict) else None
            if not out.json:
                sys.stdout.write("\n")  # end the partial reply, if any, before the error on stderr
            raise CliError(
                f"chat failed: {message}" + (f" ({code})" if code else ""),
                UNAVAILABLE if code in UNAVAILABLE_CHAT_ERRORS else FAILED,
                {"error": code or "chat_failed", "events": events},
            )
        if out.json:
            continue
        if event in ("token", "message", "delta"):
            sys.stdout.write(_token_text(data))
            sys.stdout.flush()
        elif event in ("tool_call", "tool_result") and isinstance(data, dict):
            out.err.print(f"[{event}: {data.get('tool') or data.get('name')}]", markup=False)
        elif event == "done":
            break
    if out.json:
        out.data(events)
    else:
        sys.stdout.write("\n")
    return OK


def require_token(settings: config.Settings) -> None:
    if not settings.token:
        raise CliError(f"not logged in to {settings.url}: run `ai-cdn login` or set AICDN_TOKEN", AUTH)

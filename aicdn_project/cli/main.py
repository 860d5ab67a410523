"""`ai-cdn` entry point: the argument parser and the dispatch, with one place mapping failures to exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from aicdn_project.cli import commands, config
from aicdn_project.cli.client import FAILED, Api, CliError


def _common() -> argparse.ArgumentParser:
    # Accepted before and after the sub-command; SUPPRESS keeps a later default from erasing an earlier value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON only")
    common.add_argument("--url", default=argparse.SUPPRESS, help="server URL (default: AICDN_URL, config, :8000)")
    return common


def _source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="blueprint YAML file, or - for standard input")
    parser.add_argument("--blueprint", type=int, help="add the version to this blueprint id (default: by name)")
    parser.add_argument("-m", "--message", default="", help="version message")


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="follow the IPR until deployed or failed")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --wait")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up waiting after this many seconds")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="ai-cdn",
        description="AI-CDN command line: blueprints, plans, Infrastructure Pull Requests and deployments.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: object, help_text: str, parent: argparse._SubParsersAction = sub
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    p = add("login", commands.cmd_login, "get an API token with your username and password and store it")
    p.add_argument("--username", "-u")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(needs_token=False)
    p = add("logout", commands.cmd_logout, "forget the stored token")
    p.set_defaults(needs_token=False)

    p = add("validate", commands.cmd_validate, "validate a blueprint file (exit 1 when invalid)")
    p.add_argument("file", help="blueprint YAML file, or - for standard input")
    _source_options(add("push", commands.cmd_push, "create the blueprint or add a version from a file"))
    p = add("plan", commands.cmd_plan, "push a blueprint file and show its plan against an environment")
    _source_options(p)
    p.add_argument("--env", required=True, help="environment name")
    p = add("deploy", commands.cmd_deploy, "push a blueprint file and open an IPR to deploy it")
    _source_options(p)
    p.add_argument("--env", required=True, help="environment name")
    p.add_argument("--title", help="IPR title")
    _wait_options(p)
    p = add("status", commands.cmd_status, "environments and what is deployed on them")
    p.add_argument("--env", help="one environment")
    p = add("rollback", commands.cmd_rollback, "open a rollback IPR to an earlier blueprint version")
    p.add_argument("--to", required=True, metavar="COMMIT", help="commit id (or version id) to go back to")
    p.add_argument("--env", required=True, help="environment name")
    p.add_argument(
        "--emergency", action="store_true", help="emergency rollback: one approval (operators; policy must allow it)"
    )

    iprs = add("iprs", None, "Infrastructure Pull Requests").add_subparsers(dest="iprs_command", required=True)
    p = add("list", commands.cmd_iprs_list, "list IPRs", iprs)
    p.add_argument("--env", help="only this environment")
    p.add_argument("--state", help="only this state")
    p = add("show", commands.cmd_iprs_show, "one IPR with its plan", iprs)
    p.add_argument("id", type=int)
    for name, func in (("approve", commands.cmd_iprs_approve), ("reject", commands.cmd_iprs_reject)):
        p = add(name, func, f"{name} an IPR", iprs)
        p.add_argument("id", type=int)
        p.add_argument("--comment", "-c", required=name == "reject", help="review comment")
    p = add("deploy", commands.cmd_iprs_deploy, "start deploying an approved IPR (operators)", iprs)
    p.add_argument("id", type=int)
    _wait_options(p)

    templates = add("templates", None, "blueprint templates").add_subparsers(dest="templates_command", required=True)
    add("list", commands.cmd_templates_list, "list templates", templates)
    p = add("show", commands.cmd_templates_show, "one template and its parameters", templates)
    p.add_argument("id")
    p = add("customize", commands.cmd_templates_customize, "render a template with parameters", templates)
    p.add_argument("id")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="a parameter (repeatable)")
    p.add_argument("--out", "-o", help="write the blueprint YAML to this file")

    p = add("chat", commands.cmd_chat, "send one message to the assistant and stream its answer")
    p.add_argument("message")
    p.add_argument("--conversation", help="continue this conversation id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    as_json = getattr(args, "json", False)
    out = commands.Out(as_json)
    settings = config.resolve(getattr(args, "url", None))
    args.username_hint = settings.username
    api = Api(settings.url, settings.token)
    try:
        if getattr(args, "needs_token", True):
            commands.require_token(settings)
        return args.func(api, args, out)
    except CliError as exc:
        if as_json:
            sys.stdout.write(
                json.dumps(
                    {
                        "error": exc.payload.get("error", "failed"),
                        **exc.payload,
                        "message": exc.message,
                        "exit_code": exc.exit_code,
                    },
                    indent=2,
                )
                + "\n"
            )
        else:
            out.err.print(f"error: {exc.message}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        out.err.print("interrupted", markup=False)
        return FAILED
    finally:
        api.close()


if __name__ == "__main__":
    raise SystemExit(main())

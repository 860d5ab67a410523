"""HTTP to the AI-CDN API: JSON requests, SSE streams, and API errors turned into exit codes and readable messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

# Exit codes (docs/cli.md).
OK = 0
FAILED = 1  # the request was understood and refused, or the answer is a failure (invalid blueprint, failed deploy)
USAGE = 2  # argparse's own code for bad arguments
AUTH = 3
NOT_FOUND = 4
CONFLICT = 5
UNAVAILABLE = 6


@dataclass
class CliError(Exception):
    message: str
    exit_code: int = FAILED
    payload: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


def _exit_code_for(status: int) -> int:
    if status in (401, 403):
        return AUTH
    if status == 404:
        return NOT_FOUND
    if status == 409:
        return CONFLICT
    if status >= 500:
        return UNAVAILABLE
    return FAILED


def _error_from(response: httpx.Response) -> CliError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {"details": body}
    code = body.get("error") or f"http_{response.status_code}"
    message = body.get("message") or body.get("detail") or response.reason_phrase or "request failed"
    if response.status_code == 429:
        retry = (body.get("details") or {}).get("retry_after") or response.headers.get("Retry-After")
        if retry is not None:
            message = f"rate limited: {message}" if "retry" in message.lower() else f"{message} (retry in {retry} s)"
    errors = (body.get("details") or {}).get("errors") if isinstance(body.get("details"), dict) else None
    if errors:
        lines = [f"  {e.get('path', '$')}: {e.get('message', e)}" for e in errors[:20] if isinstance(e, dict)]
        message = message + "\n" + "\n".join(lines)
    if response.status_code == 401:
        message += "\n(run `ai-cdn login`, or set AICDN_TOKEN)"
    payload = {"status": response.status_code, "error": code, "message": body.get("message") or message}
    if body.get("details"):
        payload["details"] = body["details"]
    return CliError(message, _exit_code_for(response.status_code), payload)


class Api:
    def __init__(self, url: str, token: str = "", timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "ai-cdn-cli"}
        if token:
            headers["Authorization"] = f"Token {token}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise CliError(f"{self.url} did not answer in time ({exc})", UNAVAILABLE) from exc
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the AI-CDN server at {self.url}: {exc}", UNAVAILABLE) from exc

    def request(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None) -> Any:
        response = self._send(method, path, json=json_body, params=params)
        if response.status_code >= 400:
            raise _error_from(response)
        if response.status_code == 204 or not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(f"{method} {path}: the server answered with something that is not JSON", FAILED) from exc

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None} or None)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json_body=body if body is not None else {})

    def paginate(self, path: str, **params: Any) -> Iterator[Any]:
        """Every item of a DRF list: follows `next` for paginated answers, yields a plain list as it is."""
        page: Any = self.get(path, **params)
        while True:
            if isinstance(page, list):
                yield from page
                return
            yield from page.get("results", [])
            nxt = page.get("next")
            if not nxt:
                return
            page = self.request("GET", nxt)

    def stream(self, path: str, body: Any) -> Iterator[tuple[str, Any]]:
        """POST and read a server-sent event stream: yields (event name, decoded data) per event."""
        try:
            with self.http.stream(
                "POST", path, json=body, headers={"Accept": "text/event-stream"}, timeout=httpx.Timeout(30, read=300)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response)
                event, data_lines = "message", []
                for line in response.iter_lines():
                    if line == "":
                        if data_lines:
                            yield event, _decode("\n".join(data_lines))
                        event, data_lines = "message", []
                    elif line.startswith(":"):
                        continue  # comment / keep-alive
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data_lines.append(line[5:].removeprefix(" "))
                if data_lines:
                    yield event, _decode("\n".join(data_lines))
        except httpx.TimeoutException as exc:
            raise CliError(f"{self.url} stopped answering ({exc})", UNAVAILABLE) from exc
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the AI-CDN server at {self.url}: {exc}", UNAVAILABLE) from exc


def _decode(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data

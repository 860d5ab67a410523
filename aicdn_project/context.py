"""Where a change came from (request id, client IP), carried to the audit trail without threading it through."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    request_id: str = ""
    client_ip: str = ""
    channel: str = ""  # api / admin / chat / cli / worker


current_origin: ContextVar[Origin] = ContextVar("aicdn_origin", default=Origin())  # noqa: B039


@contextlib.contextmanager
def origin(**fields: str) -> Iterator[Origin]:
    token = current_origin.set(Origin(**fields))
    try:
        yield current_origin.get()
    finally:
        current_origin.reset(token)

"""Role names (Django groups created by a data migration) and the checks every app uses."""

from __future__ import annotations

from typing import Any

REQUESTERS = "requesters"
REVIEWERS = "reviewers"
OPERATORS = "operators"
ADMINS = "admins"
ALL_ROLES = (REQUESTERS, REVIEWERS, OPERATORS, ADMINS)


def roles_of(user: Any) -> set[str]:
    if user is None or not getattr(user, "is_authenticated", False):
        return set()
    cached = getattr(user, "_aicdn_roles", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        if user.is_superuser:
            cached.add(ADMINS)
        user._aicdn_roles = cached
    return cached


def has_role(user: Any, *roles: str) -> bool:
    """True when the user is in any of the roles; admins hold every role."""
    mine = roles_of(user)
    return ADMINS in mine or any(role in mine for role in roles)


def is_admin(user: Any) -> bool:
    return ADMINS in roles_of(user)

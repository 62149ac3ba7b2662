"""Who is looking: the viewer's role, declared by the caller and checked by the analyst-only functions.

Why a context variable and not a `role` argument on every function: the analyst-only functions
(one person's events, interests, predictions, explanations, lists of user ids) sit deep in
call chains that are also cached by the dashboard; threading a role through each signature would
touch every caller, and a forgotten argument would default to something. Instead the entry point
says once who the viewer is (`declare_viewer` in the dashboard's script run and the CLI, or the
`viewer(...)` block), and `@analyst_only` refuses a marketer with `AccessDenied` before the
function reads anything.

No declared viewer means a caller that holds the database file itself (a script, a test): it
could read every row with DuckDB anyway, so the check has nothing to protect there. The
dashboard, whose viewers hold nothing, always declares one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

__all__ = [
    "ROLES",
    "ANALYST_ONLY",
    "AccessDenied",
    "analyst_only",
    "current_viewer",
    "declare_viewer",
    "is_role",
    "require_analyst",
    "viewer",
]

# "analyst" sees per-person views; "marketer" sees aggregates over at least k people only.
ROLES = ("analyst", "marketer")
# Names of the functions marked @analyst_only (bare names, as `analytics.ANALYST_ONLY` always had).
ANALYST_ONLY: set[str] = set()

F = TypeVar("F", bound=Callable[..., Any])
_VIEWER: ContextVar[str | None] = ContextVar("interestgeo_viewer", default=None)


class AccessDenied(PermissionError):
    """The viewer's role may not see this (one sentence, safe to show)."""


def is_role(value: object) -> bool:
    return isinstance(value, str) and value in ROLES


def declare_viewer(role: str) -> None:
    """Set the viewer for the rest of this thread's work (the dashboard's script run, a CLI command).

    An unknown role is refused rather than mapped to a default: the caller decides what it means.
    """
    if not is_role(role):
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    _VIEWER.set(role)


@contextmanager
def viewer(role: str) -> Iterator[None]:
    """The viewer for the length of a block (then whatever it was before)."""
    if not is_role(role):
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    token = _VIEWER.set(role)
    try:
        yield
    finally:
        _VIEWER.reset(token)


def current_viewer() -> str | None:
    """The declared role, or None when nobody declared one (a caller holding the database)."""
    return _VIEWER.get()


def require_analyst(what: str, role: str | None = None) -> None:
    """Raise AccessDenied unless the viewer (`role`, else the declared one) may see one person's data."""
    role = current_viewer() if role is None else role
    if role is not None and role != "analyst":
        raise AccessDenied(f"{what} is for analysts only; the {role} role sees aggregates over people")


def analyst_only(fn: F) -> F:
    """Mark and guard a function that returns user ids or one person's data: a marketer viewer
    gets AccessDenied before the function runs."""

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        require_analyst(f"{fn.__name__.replace('_', ' ')}")
        return fn(*args, **kwargs)

    guarded.analyst_only = True  # type: ignore[attr-defined]
    ANALYST_ONLY.add(fn.__name__)
    return guarded  # type: ignore[return-value]

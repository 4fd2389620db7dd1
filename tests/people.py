"""Test helpers: users with tokens, as the authorization tests need them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from maestro.events import Metadata

if TYPE_CHECKING:
    from maestro.runtime import Runtime

TESTS = Metadata(actor="system:tests")


async def user_token(
    runtime: "Runtime", user_id: str, *, admin: bool = False, groups: tuple[str, ...] = (), enabled: bool = True
) -> str:
    """A service user (created if missing) in ``groups`` with a fresh API token; returns the token."""
    await runtime.users.ensure_service_user(user_id, user_id, TESTS, admin=admin)
    for group_id in groups:
        await runtime.users.add_member(group_id, user_id, TESTS)
    _, token = await runtime.tokens.create(user_id, "tests", TESTS)
    if not enabled:
        await runtime.users.change(user_id, TESTS, enabled=False)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}

"""Shared set-up of the git tests: a configured repository, the worker, people as users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maestro.events.catalog import TableSpec
from maestro.events.model import Metadata
from maestro.handlers.git.sync import GitSync
from maestro.runtime import Runtime

ADMIN = Metadata(actor="system:tests")


async def configure(runtime: Runtime, url: str, **settings: Any) -> None:
    assert runtime.config_service is not None
    values = {"repo_url": url, "committer_email": "maestro@maestro.test", **settings}
    await runtime.config_service.set_section("git", values, ADMIN, partial=False)


def worker(runtime: Runtime, data: Path, **options: Any) -> GitSync:
    assert runtime.config is not None
    return GitSync(runtime.store, runtime.catalog, runtime.config, data, settle=options.pop("settle", 0.0), **options)


async def person(runtime: Runtime, name: str, email: str) -> Metadata:
    """A signed-up person; the metadata of a request they make."""
    user, _ = await runtime.users.sign_in("https://idp.test", email, email, name, enable_new=True)
    return Metadata(actor=f"user:{user.user_id}")


def spec(name: str, query: str = "SELECT 1 AS x", dataset: str = "sales", **fields: Any) -> TableSpec:
    return TableSpec(dataset=dataset, name=name, query=query, **fields)


async def settled(sync: GitSync) -> None:
    """Cycles until one asks for no other at once (a rejected push is followed by another)."""
    for _ in range(10):
        if not await sync.cycle():
            return
    raise AssertionError("the git worker keeps asking for another cycle")

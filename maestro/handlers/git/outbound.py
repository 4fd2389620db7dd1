"""Outbound: the log's catalog events become commits in the local clone (pushed by ``sync``).

Where to start is read from the repository itself: the ``Maestro-Events: <first>-<last>`` trailer
of the newest commit Maestro made on the branch says which events are in it. A crash after a
commit and before anything else therefore never commits the same events twice — the restart reads
the trailer and goes on after ``last``. A repository without such a commit gets the whole catalog
in one commit first (:meth:`Outbound.snapshot`), as of a log position, and the events after it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro.adapters.git import Git
from maestro.events.model import RecordedEvent, now
from maestro.events.store import EventStore
from maestro.handlers.catalog.history import fold_table
from maestro.handlers.git import render

PAGE = 5000


@dataclass(frozen=True, slots=True)
class Made:
    """A commit made in the clone (not yet on the remote)."""

    sha: str
    first: int
    last: int
    title: str


class EventReader:
    """The catalog events after a position, a commit's worth (:func:`render.group`) at a time."""

    def __init__(self, store: EventStore, after: int, settle: float) -> None:
        self.store = store
        self.after = after
        self.settle = settle
        self._buffer: list[RecordedEvent] = []

    async def _fill(self) -> int:
        start = self._buffer[-1].position if self._buffer else self.after
        more = await self.store.read_all(start, PAGE, render.CATALOG_EVENTS)
        self._buffer.extend(more)
        return len(more)

    async def next_group(self) -> list[RecordedEvent] | None:
        """The next commit's events, or None when the log has nothing more now.

        A group that reaches the newest event read may still grow (an apply appends table after
        table): it is taken once an event of another command follows it, or once its last event
        is ``settle`` seconds old with nothing after it.
        """
        if not self._buffer and not await self._fill():
            return None
        while True:
            first = render.group(self._buffer)[0]
            if len(first) < len(self._buffer) or len(first) >= render.MAX_GROUP:
                break
            if await self._fill():
                continue
            age = (now() - self._buffer[-1].occurred_at).total_seconds()
            if age >= self.settle:
                break
            await asyncio.sleep(min(self.settle - max(age, 0.0), self.settle))
            if not await self._fill():
                break
        taken = render.group(self._buffer)[0]
        del self._buffer[: len(taken)]
        self.after = taken[-1].position
        return taken


class Outbound:
    def __init__(self, store: EventStore, git: Git, root: Path, committer: tuple[str, str]) -> None:
        self.store = store
        self.git = git
        self.root = root  # the clone's folder that holds the catalog (the path prefix)
        self.path = str(root.relative_to(git.workdir)) if root != git.workdir else "."
        self.committer = committer

    # ---------------------------------------------------------------- one commit
    async def changes(self, events: Sequence[RecordedEvent]) -> list[render.TableChange]:
        """Each table the events touch: its live spec before them and after them."""
        spans: dict[str, list[int]] = {}
        for r in events:
            if r.stream_id.startswith("table-"):
                span = spans.setdefault(r.stream_id, [r.version, r.version])
                span[1] = r.version
        found = []
        for stream_id, (low, high) in spans.items():
            history = await self.store.read(stream_id)
            before = [r for r in history if r.version < low]
            after = [r for r in history if r.version <= high]
            old = fold_table(before) if before else None
            new = fold_table(after)
            found.append(render.TableChange(
                stream_id.removeprefix("table-"),
                old.spec if old is not None and not old.deleted else None,
                new.spec if not new.deleted else None,
                was_deleted=old is not None and old.deleted,
            ))
        return found

    async def commit(self, events: Sequence[RecordedEvent]) -> Made | None:
        """Write what ``events`` (one group) changed and commit it; None when no file changed
        (a change only of canonical form, or an apply of files already there)."""
        lines: list[str] = []
        for change in await self.changes(events):
            render.write_table(self.root, change)
            line = change.describe()
            if line is not None:
                lines.append(line)
        lines = render.plan_order(lines) + render.write_side_files(self.root, events)
        first, last = events[0], events[-1]
        actor = first.metadata.actor
        title = render.title_of(lines) if lines else "Catalog change"
        text = render.message(lines, first.position, last.position, actor, first.metadata.correlation_id, title,
                              self.path)
        author = await self.author(actor, first.occurred_at)
        sha = await self.git.commit_all(text, author=author, committer=self.committer)
        return Made(sha, first.position, last.position, title) if sha else None

    async def author(self, actor: str, at: dt.datetime) -> tuple[str, str, str]:
        """(name, email, date) of the person behind ``actor``: a user's name and email from the
        users read model; a CLI login or a git author as they are; Maestro itself otherwise."""
        name, email = self.committer
        kind, _, who = actor.partition(":")
        domain = self.committer[1].rpartition("@")[2] or "localhost"
        if kind == "user" and who:
            row = await self.store.pool.fetchrow("SELECT name, email FROM users WHERE user_id = $1", who)
            name = (row["name"] if row is not None and row["name"] else None) or who
            email = (row["email"] if row is not None and row["email"] else None) or f"{who}@{domain}"
        elif kind == "cli" and who:
            name, email = who, f"{who}@{domain}"
        elif kind == "git" and "@" in who:
            name, email = who.partition("@")[0], who
        return name, email, f"@{int(at.timestamp())} +0000"

    # ---------------------------------------------------------------- the whole catalog
    async def snapshot(self) -> Made:
        """The whole catalog as of the log's safe head, in one commit (the first one)."""
        head = await self.store.head_position()
        streams: dict[str, list[RecordedEvent]] = {}
        frequencies: dict[str, Any] = {}
        datasets: dict[str, Any] = {}
        position = 0
        while position < head:
            batch = await self.store.read_all(position, PAGE, render.CATALOG_EVENTS)
            batch = [r for r in batch if r.position <= head]
            if not batch:
                break
            for r in batch:
                if r.stream_id.startswith("table-"):
                    streams.setdefault(r.stream_id, []).append(r)
                else:
                    render.fold_side(frequencies, datasets, r.event)
            position = batch[-1].position
        live = [v for v in (fold_table(evs) for evs in streams.values()) if not v.deleted]
        render.write_snapshot(self.root, [v.spec for v in live], frequencies, datasets)
        title = f"Export the catalog: {len(live)} table{'s' if len(live) != 1 else ''}"
        text = render.message([], 0, head, "system:git", "snapshot", title, self.path)
        name, email = self.committer
        sha = await self.git.commit_all(text, author=(name, email, f"@{int(now().timestamp())} +0000"),
                                        committer=self.committer)
        if sha is None:  # the branch already holds exactly this catalog: mark it as Maestro's
            await self.git.run("commit", "-q", "--allow-empty", "--no-verify", "--no-gpg-sign", "-F", "-",
                               stdin=text, env=_people(self.committer, email, name))
            sha = await self.git.rev("HEAD")
        assert sha is not None
        return Made(sha, 0, head, title)


def _people(committer: tuple[str, str], email: str, name: str) -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": committer[0], "GIT_COMMITTER_EMAIL": committer[1]}


async def versions_in(store: EventStore, first: int, last: int) -> dict[str, int]:
    """Table id -> the version a commit covering positions ``first``..``last`` holds."""
    tables: dict[str, int] = {}
    position = max(first - 1, 0)
    while position < last:
        batch = await store.read_all(position, PAGE, render.CATALOG_EVENTS)
        batch = [r for r in batch if r.position <= last]
        if not batch:
            break
        for r in batch:
            if r.stream_id.startswith("table-"):
                tables[r.stream_id.removeprefix("table-")] = r.version
        position = batch[-1].position
    return tables


"""The git worker: one loop that keeps the catalog and its repository in step (docs/git.md).

Each cycle, on the leader only (the git reactor starts and stops it):

1. read the configuration *now* (remote, branch, prefix, mode, credentials: changes apply at the
   next cycle, no restart); one clone per repository under ``<data dir>/git/<repo key>``;
2. fetch the branch. If the remote moved past the clone (someone pushed, or the clone's own
   commits were never pushed), take the remote's head: Maestro's unpushed commits are not
   rebased with git but made again from the log on top of it — they are a function of the log,
   so this "rebase" never conflicts;
3. record (``GitCommitted``) every commit of Maestro's on the remote that is not recorded yet —
   after a ``kill -9`` between a push and its event, this is where the event is written;
4. in mode ``sync``, apply what people committed since Maestro's last commit (inbound.py), once
   per branch head: a refused head is not tried again until the branch changes;
5. commit the log's catalog events after the trailer of Maestro's last commit (outbound.py),
   one commit per command, then push. A rejected push (the remote moved meanwhile) starts the
   cycle again at once; a remote that is down leaves the commits in the clone, and a later cycle
   pushes them: nothing is lost, nothing is committed twice.

Failures are events (``GitSyncFailed``, once per distinct error, then ``GitSyncRecovered``), and
the loop survives anything, a database outage included, retrying with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro.adapters.git import Credentials, Git, GitError
from maestro.errors import ConcurrencyConflict, MaestroError, database_unavailable
from maestro.events.config import GitSection
from maestro.events.git import (
    GitCommitApplied, GitCommitRefused, GitCommitted, GitSyncFailed, GitSyncRecovered, git_stream,
)
from maestro.events.model import Event, Metadata
from maestro.events.store import NO_STREAM, EventStore
from maestro.handlers.catalog.apply import ApplyInterrupted
from maestro.handlers.catalog.history import TABLE_EVENTS
from maestro.handlers.catalog.service import CatalogService
from maestro.handlers.git import inbound
from maestro.handlers.git.outbound import EventReader, Outbound, versions_in

log = logging.getLogger(__name__)
ACTOR = Metadata(actor="system:git")
MAX_RETRY = 60.0


@dataclass(frozen=True, slots=True)
class Target:
    """The repository as configured now."""

    key: str
    url: str
    branch: str
    prefix: str
    mode: str
    poll_interval: float
    credentials: Credentials
    committer: tuple[str, str]


def repo_key(url: str, branch: str, prefix: str) -> str:
    return hashlib.sha256(f"{url}\n{branch}\n{prefix}".encode()).hexdigest()[:12]


def target_of(section: GitSection, secret: Any) -> Target | None:
    """``secret(field)``: a secret of the git section, opened (None when not set)."""
    if not section.repo_url:
        return None
    creds = Credentials(token=secret("token"), username=section.username, ssh_key=secret("ssh_key"),
                        known_hosts=section.ssh_known_hosts)
    return Target(
        repo_key(section.repo_url, section.branch, section.path_prefix), section.repo_url, section.branch,
        section.path_prefix, section.mode, float(section.poll_interval), creds,
        (section.committer_name, section.committer_email),
    )


class GitSync:
    def __init__(self, store: EventStore, catalog: CatalogService, config: Any, data_dir: Path, *,
                 settle: float = 0.3, timeout: float = 60.0) -> None:
        self.store = store
        self.catalog = catalog
        self.config = config  # the live ConfigView
        self.data_dir = data_dir
        self.settle = settle
        self.timeout = timeout
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.cycles = 0  # completed cycles (tests and benches wait on it)
        self.behind = False  # the last cycle could not fetch or push: commits wait in the clone
        self.last_error: MaestroError | Exception | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="git-sync")
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def target(self) -> Target | None:
        section = self.config.get("git")
        return target_of(section, lambda field: self.config.secret("git", field))

    async def _run(self) -> None:
        delay = 1.0
        while not self._stopping:
            self._wake.clear()
            timeout: float | None = None
            try:
                self.behind = False
                again = await self.cycle()
                self.last_error = None
                target = self.target()
                if again:
                    timeout = 0.0
                elif target is not None and target.mode == "sync":
                    timeout = target.poll_interval
                if self.behind:  # the remote did not answer: try again soon, backing off
                    timeout, delay = min(timeout or delay, delay), min(delay * 2, MAX_RETRY)
                else:
                    delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never a silent end: say it, wait, start over
                self.last_error = exc
                level = log.warning if isinstance(exc, MaestroError) or database_unavailable(exc) else log.exception
                level("git sync failed; retrying", extra={"error": getattr(exc, "message", str(exc))})
                timeout, delay = delay, min(delay * 2, MAX_RETRY)
            self.cycles += 1
            if timeout == 0.0:
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    # ---------------------------------------------------------------- one cycle
    async def cycle(self) -> bool:
        """One pass; True when another should follow at once (the push was rejected)."""
        target = self.target()
        if target is None:
            return False
        git = Git(self.data_dir / "git" / target.key, target.url, target.credentials, timeout=self.timeout)
        root = git.workdir / target.prefix if target.prefix else git.workdir
        branch, email = target.branch, target.committer[1]
        try:
            await git.ensure_clone(branch)
        except GitError as exc:
            await self._failed(target, "clone", exc)
            raise
        fetched, head = True, None
        try:
            head = await git.fetch(branch)
        except GitError as exc:
            await self._failed(target, "fetch", exc)
            fetched, self.behind = False, True
        local = await git.rev(f"refs/heads/{branch}")
        if fetched and head is not None and (local is None or not await git.is_ancestor(head, local)):
            local = head  # the remote moved: start from it; unpushed commits are made again
        # Whatever a crashed cycle left half-written goes: the tree is exactly the branch's commit.
        await git.reset(branch, local)
        last = await git.last_maestro_commit("HEAD", email, target.prefix or ".") if local else None
        covered = last.positions()[1] if last is not None and last.positions() else None
        if fetched and head is not None:
            await self._record_pushed(git, target, head)
            if target.mode == "sync" and last is not None and covered is not None:
                if not await self._inbound(git, target, root, head, last.sha, covered):
                    return True  # a concurrent writer interrupted the apply: again, from the fetch
        out = Outbound(self.store, git, root, target.committer)
        try:
            if covered is None:
                covered = (await out.snapshot()).last
            reader = EventReader(self.store, covered, self.settle)
            while (events := await reader.next_group()) is not None:
                await out.commit(events)
        except GitError as exc:
            await self._failed(target, "commit", exc)
            raise
        if not fetched:
            return False  # commits wait in the clone; the next cycle pushes them
        mine = await git.rev(f"refs/heads/{branch}")
        if mine is not None and mine != head:
            try:
                await git.push(branch)
            except GitError as exc:
                if exc.kind == "rejected":
                    return True
                await self._failed(target, "push", exc)
                self.behind = True
                return False
            await self._record_pushed(git, target, mine)
        await self._recovered(target, mine)
        return False

    # ---------------------------------------------------------------- inbound
    async def _inbound(self, git: Git, target: Target, root: Path, head: str, base: str, covered: int) -> bool:
        """Apply people's commits since Maestro's last one (``base``); False to retry the cycle."""
        people = [c for c in await git.log(f"{base}..{head}") if not c.by_maestro(target.committer[1])]
        if not people:
            return True
        status = await self._status(target)
        if status is not None and head in (status["refused_sha"], status["last_applied_sha"]):
            return True  # applied or refused already: not again until the branch changes
        tip = people[-1]
        actor = await self._actor(tip.author_email)
        meta = Metadata(actor=actor, correlation_id=f"git-{head}", extra={"git_commit": head})
        shas = [c.sha for c in people]
        authors = list(dict.fromkeys(f"{c.author_name} <{c.author_email}>" for c in people))
        start = await self.store.head_position()
        try:
            done = await inbound.apply_tree(self.catalog, root, git.workdir, covered, meta)
        except inbound.CommitRefused as exc:
            log.warning("a commit on the branch was refused", extra={"sha": head, "reason": exc.message})
            await self._append(target, GitCommitRefused(
                repo_key=target.key, sha=head, commits=shas, reason=exc.message, problems=exc.problems))
            return True
        except (ApplyInterrupted, ConcurrencyConflict) as exc:
            log.warning("applying a commit was interrupted; retrying", extra={"sha": head, "error": str(exc)})
            return False
        made = await self.store.read_all(start, 100_000, TABLE_EVENTS)
        tables = {r.stream_id.removeprefix("table-"): r.version for r in made
                  if r.metadata.correlation_id == meta.correlation_id}
        await self._append(target, GitCommitApplied(
            repo_key=target.key, sha=head, commits=shas, authors=authors, plan=done.plan,
            summary=done.summary, kept=done.kept, tables=tables), meta)
        return True

    async def _actor(self, email: str) -> str:
        user = await self.store.pool.fetchval(
            "SELECT user_id FROM users WHERE lower(email) = lower($1) AND enabled ORDER BY user_id LIMIT 1", email)
        return f"user:{user}" if user else f"git:{email.lower()}"

    # ---------------------------------------------------------------- records
    async def _status(self, target: Target) -> dict[str, Any] | None:
        row = await self.store.pool.fetchrow("SELECT * FROM git_status WHERE repo_key = $1", target.key)
        return dict(row) if row is not None else None

    async def _record_pushed(self, git: Git, target: Target, head: str) -> None:
        """A GitCommitted for each of Maestro's commits on the remote that has none yet."""
        status = await self._status(target)
        recorded = status["last_commit_position"] if status is not None else None
        email = target.committer[1]
        since = status["last_commit_sha"] if status is not None else None
        # Only the commits after the last one recorded, when it is still in the branch's history.
        span_of = f"{since}..{head}" if since and await git.rev(since) and await git.is_ancestor(since, head) else head
        for commit in await git.log(span_of):
            span = commit.positions()
            if not commit.by_maestro(email, target.prefix or ".") or span is None or (recorded is not None and span[1] <= recorded):
                continue
            tables = await versions_in(self.store, span[0], span[1])
            await self._append(target, GitCommitted(
                repo_key=target.key, sha=commit.sha, branch=target.branch, first_position=span[0],
                last_position=span[1], tables=tables, title=commit.subject,
                author=f"{commit.author_name} <{commit.author_email}>", snapshot=span[0] == 0))
            recorded = span[1]

    async def _failed(self, target: Target, stage: str, exc: GitError) -> None:
        status = await self._status(target)
        if status is not None and (status["error_stage"], status["error_kind"], status["error"]) == (
                stage, exc.kind, exc.message):
            return  # the same error again: once in the log is enough
        log.warning("git: %s failed", stage, extra={"kind": exc.kind, "error": exc.message})
        await self._append(target, GitSyncFailed(repo_key=target.key, stage=stage, kind=exc.kind, message=exc.message))

    async def _recovered(self, target: Target, head: str | None) -> None:
        status = await self._status(target)
        if status is not None and status["error_stage"] is not None:
            await self._append(target, GitSyncRecovered(repo_key=target.key, sha=head))

    async def _append(self, target: Target, event: Event, meta: Metadata = ACTOR) -> None:
        stream = git_stream(target.key)
        version = await self.store.stream_version(stream)
        await self.store.append(stream, NO_STREAM if version is None else version, [event], meta)

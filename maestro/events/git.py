"""Git events: the catalog's repository, both ways (docs/git.md).

One stream per repository, ``git-<repo key>`` (the key hashes remote, branch and path prefix, so a
reconfigured remote starts a new history), written only by the leader's git reactor with expected
versions. Webhook deliveries are their own streams (``git-webhook-<delivery id>``): a redelivery of
the same delivery is a concurrency conflict, not a second wake-up.

A commit that Maestro made names the log positions it covers in a ``Maestro-Events: <first>-<last>``
trailer; :class:`GitCommitted` is appended once that commit is on the remote. After a crash between
the two, the next start finds the pushed commit by its trailer and records it then (never a second
commit of the same events).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from maestro.events.model import Event

GitErrorKind = Literal[
    "auth", "not_found", "branch_missing", "unreachable", "timeout", "rejected", "failed", "config",
]


class GitCommitted(Event):
    """A commit of catalog changes is on the remote branch."""

    repo_key: str
    sha: str
    branch: str
    first_position: int  # the log positions the commit covers (0 for a first export)
    last_position: int
    tables: dict[str, int] = Field(default_factory=dict)  # table id -> its version in the commit
    title: str
    author: str  # "Name <email>"
    snapshot: bool = False  # a whole-catalog export (first commit into a repository)


class GitCommitApplied(Event):
    """Commits people pushed were applied to the catalog as ``maestro apply`` would.

    ``sha`` is the branch head whose tree was applied; ``commits`` the people's commits it brought
    (oldest first). ``kept`` lists tables the commits changed but the log had changed since the
    commits' base: the log wins for those (docs/git.md, "Conflicts").
    """

    repo_key: str
    sha: str
    commits: list[str]
    authors: list[str]
    plan: list[str]  # the plan's lines, as `maestro apply` prints them
    summary: str
    kept: list[str] = Field(default_factory=list)
    tables: dict[str, int] = Field(default_factory=dict)  # table id -> the version the apply made


class GitCommitRefused(Event):
    """A branch head people pushed does not validate: nothing of it was applied. It is not tried
    again until the branch changes."""

    repo_key: str
    sha: str
    commits: list[str]
    reason: str
    problems: list[dict] = Field(default_factory=list)  # {path, line, column, message}


class GitSyncFailed(Event):
    """Talking to the remote failed (appended when the error changes, not at every retry).
    Commits made meanwhile wait in the local clone and are pushed once it works again."""

    repo_key: str
    stage: Literal["clone", "fetch", "push", "commit", "apply"]
    kind: GitErrorKind
    message: str


class GitSyncRecovered(Event):
    """The remote answers again after a :class:`GitSyncFailed`."""

    repo_key: str
    sha: str | None = None  # the branch head then


class GitWebhookReceived(Event):
    """A signed push notification arrived: the leader fetches the branch at once."""

    ref: str = ""
    after: str = ""
    delivery: str = ""


GIT_EVENT_TYPES = frozenset(
    {"GitCommitted", "GitCommitApplied", "GitCommitRefused", "GitSyncFailed", "GitSyncRecovered"}
)


def git_stream(repo_key: str) -> str:
    return f"git-{repo_key}"

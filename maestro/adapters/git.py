"""The real ``git`` command: the only place Maestro runs it (docs/git.md).

Every call is a subprocess with a timeout (the whole process group is killed when it runs out),
``GIT_TERMINAL_PROMPT=0`` (a missing credential fails instead of waiting for a prompt nobody
answers), and neither the system nor the user's git configuration (what runs is what this module
says). Credentials never appear in a URL, an argument, a file of the clone or a log line:

- an https token travels in the environment of the remote commands only, as an
  ``http.extraHeader`` (``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_0``/``GIT_CONFIG_VALUE_0``), which git
  sends as ``Authorization: Basic`` — what GitHub, GitLab and Gitea take for a token;
- an ssh key is written for the duration of one command into a private temporary folder (0600),
  named by ``GIT_SSH_COMMAND``, and removed after it. The remote's host key must be one of the
  configured ``known_hosts`` lines (no trust on first use: a first connection is exactly when a
  man in the middle would be believed), and neither the machine's nor the user's ssh
  configuration, keys, agent or known hosts take part.

git's messages are read with ``LC_ALL=C`` and turned into :class:`GitError` with a ``kind``
(``auth``, ``not_found``, ``branch_missing``, ``unreachable``, ``timeout``, ``rejected``,
``failed``) and a retryable flag, so callers decide on data, not on text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shlex
import shutil
import signal
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from maestro.errors import MaestroError

GIT = shutil.which("git") or "/usr/bin/git"
# The commands git itself starts (ssh, its remote helpers) come from where git is and the system's
# default path, not from whatever PATH this process inherited.
_PATH = os.pathsep.join(dict.fromkeys([str(Path(GIT).parent), *filter(None, os.defpath.split(os.pathsep))]))
RETRYABLE = frozenset({"unreachable", "timeout", "rejected"})


class GitError(MaestroError):
    """A git command failed."""

    code = "git_error"
    status = 502

    def __init__(self, message: str, kind: str = "failed", **details: object) -> None:
        self.kind = kind
        self.retryable = kind in RETRYABLE
        super().__init__(message, kind=kind, **details)


@dataclass(frozen=True, slots=True)
class Credentials:
    token: str | None = None
    username: str = "x-access-token"
    ssh_key: str | None = None
    known_hosts: str = ""  # lines of a known_hosts file: the only host keys an ssh remote may have

    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.ssh_key) if s]


# (substring of git's LC_ALL=C message, kind), first match wins.
_KINDS: tuple[tuple[str, str], ...] = (
    ("couldn't find remote ref", "branch_missing"),
    ("authentication failed", "auth"),
    ("could not read username", "auth"),
    ("could not read password", "auth"),
    ("the requested url returned error: 401", "auth"),
    ("the requested url returned error: 403", "auth"),
    ("permission denied (publickey", "auth"),
    ("host key verification failed", "auth"),
    ("repository not found", "not_found"),
    ("does not appear to be a git repository", "not_found"),
    ("the requested url returned error: 404", "not_found"),
    ("[rejected]", "rejected"),
    ("non-fast-forward", "rejected"),
    ("fetch first", "rejected"),
    ("could not resolve host", "unreachable"),
    ("connection refused", "unreachable"),
    ("failed to connect", "unreachable"),
    ("connection timed out", "unreachable"),
    ("could not read from remote repository", "unreachable"),
    ("unable to access", "unreachable"),
    ("the requested url returned error: 5", "unreachable"),
)
_HOST_KEY = "host key verification failed"
_HOST_KEY_LEAD = ("the ssh remote's host key is not one of ssh_known_hosts (unknown or changed), "
                  "so ssh stopped before authenticating")
_EXPLAIN = {
    "auth": "the remote refused the credentials",
    "not_found": "no repository at that URL",
    "branch_missing": "the branch does not exist on the remote",
    "unreachable": "the remote cannot be reached",
    "rejected": "the remote refused the push (it moved)",
}


def classify(stderr: str) -> str:
    low = stderr.lower()
    return next((kind for needle, kind in _KINDS if needle in low), "failed")


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class Git:
    """One clone (``workdir``) of one remote (``url``, which carries no credentials)."""

    def __init__(self, workdir: Path, url: str, credentials: Credentials = Credentials(), *,
                 timeout: float = 60.0) -> None:
        self.workdir = workdir
        self.url = url
        self.credentials = credentials
        self.timeout = timeout
        self.last_returncode: int | None = None
        self.last_stderr = ""
        self._ssh_folder: str | None = None  # the current command's key folder, named in ssh's messages

    # ---------------------------------------------------------------- running
    def _base_env(self) -> dict[str, str]:
        home = self.workdir.parent
        return {
            "PATH": _PATH, "HOME": str(home), "LC_ALL": "C", "LANG": "C",
            "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false", "GIT_OPTIONAL_LOCKS": "0",
        }

    @contextlib.contextmanager
    def _remote_env(self) -> Iterator[dict[str, str]]:
        env: dict[str, str] = {}
        creds = self.credentials
        if creds.token and self.url.startswith(("https://", "http://")):
            basic = base64.b64encode(f"{creds.username}:{creds.token}".encode()).decode()
            env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"})
        if not self.url.startswith(("https://", "http://", "file://", "/")):
            with self._ssh(env):
                yield env
            return
        yield env

    @contextlib.contextmanager
    def _ssh(self, env: dict[str, str]) -> Iterator[None]:
        creds = self.credentials
        folder = Path(tempfile.mkdtemp(prefix="maestro-ssh-"))  # 0700
        try:
            pinned = folder / "known_hosts"  # empty when none is configured: every host is refused
            pinned.write_text(creds.known_hosts.strip() + "\n" if creds.known_hosts.strip() else "")
            # -F /dev/null: no ssh_config (the machine's or the user's, which ssh finds from the
            # password database, not $HOME); no agent; only the pinned host keys.
            options = ["-F", os.devnull, "-o", "BatchMode=yes", "-o", "ConnectTimeout=15",
                       "-o", "IdentityAgent=none", "-o", f"UserKnownHostsFile={pinned}",
                       "-o", f"GlobalKnownHostsFile={os.devnull}", "-o", "StrictHostKeyChecking=yes",
                       "-o", "UpdateHostKeys=no", "-o", "IdentitiesOnly=yes"]
            if creds.ssh_key:
                key = folder / "key"
                fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(creds.ssh_key.strip() + "\n")
                options += ["-i", str(key)]  # with an -i, ssh tries none of its default key files
            else:
                options += ["-o", "IdentityFile=none"]  # not the keys in the user's ~/.ssh
            # git runs GIT_SSH_COMMAND through the shell: every word quoted (a TMPDIR with a space).
            env["GIT_SSH_COMMAND"] = shlex.join(["ssh", *options])
            self._ssh_folder = str(folder)
            yield
        finally:
            self._ssh_folder = None
            shutil.rmtree(folder, ignore_errors=True)

    def _detail(self, stderr: str) -> str:
        """git's message for an error: no secret, and the same text for the same failure (ssh names
        its known_hosts file, a new temporary folder each time, and ends lines with CR LF)."""
        text = stderr.replace("\r\n", "\n").strip()
        if self._ssh_folder:
            text = text.replace(f"{self._ssh_folder}/known_hosts", "ssh_known_hosts")
            text = text.replace(self._ssh_folder, "<key folder>")
        return _redact(text, self.credentials.secrets())[-600:]

    async def run(self, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None,
                  remote: bool = False, check: bool = True, cwd: Path | None = None) -> str:
        """Run ``git args`` in the clone; its stdout. Raises GitError (``check``) on failure."""
        full = {**self._base_env(), **(env or {})}
        if remote:
            with self._remote_env() as extra:
                full.update(extra)
                return await self._exec(args, stdin, full, check, cwd)
        return await self._exec(args, stdin, full, check, cwd)

    async def _exec(self, args: tuple[str, ...], stdin: str | None, env: dict[str, str], check: bool,
                    cwd: Path | None) -> str:
        where = cwd or self.workdir
        proc = await asyncio.create_subprocess_exec(
            GIT, *args, cwd=where, env=env, start_new_session=True,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), self.timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise GitError(f"git {args[0]} took longer than {self.timeout:g} s; stopped", "timeout",
                           command=args[0]) from None
        text = out.decode("utf-8", "replace")
        self.last_stderr = err.decode("utf-8", "replace")
        self.last_returncode = proc.returncode
        if check and proc.returncode != 0:
            detail = self._detail(self.last_stderr)
            kind = classify(detail)
            lead = _HOST_KEY_LEAD if _HOST_KEY in detail.lower() else _EXPLAIN.get(kind, f"git {args[0]} failed")
            raise GitError(f"{lead}: {detail}" if detail else lead, kind, command=args[0])
        return text

    # ---------------------------------------------------------------- the clone
    async def ensure_clone(self, branch: str) -> None:
        """A clone of ``url`` in ``workdir`` (created empty, fetched later): one per remote."""
        if (self.workdir / ".git").is_dir():
            current = (await self.run("config", "--get", "remote.origin.url", check=False)).strip()
            if current == self.url:
                self._drop_stale_locks()
                return
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        await self.run("init", "-q", "-b", branch, ".")
        for key, value in (("core.autocrlf", "false"), ("core.quotepath", "off"), ("gc.auto", "256"),
                           ("remote.origin.url", self.url)):
            await self.run("config", key, value)

    def _drop_stale_locks(self) -> None:
        """A git command killed half-way (a ``kill -9`` of Maestro, a timeout) leaves its lock
        files, and every later command would fail on them. The clone is this worker's alone and
        no command of it is running between cycles, so any lock left is stale."""
        git_dir = self.workdir / ".git"
        for lock in [git_dir / "index.lock", git_dir / "HEAD.lock", *(git_dir / "refs").rglob("*.lock")]:
            lock.unlink(missing_ok=True)

    async def fetch(self, branch: str) -> str | None:
        """Fetch ``branch``; its head, or None when the remote has no branch at all (an empty
        repository, which the first push fills). A missing branch on a repository that has
        others is an error (kind ``branch_missing``) naming them."""
        try:
            await self.run("fetch", "-q", "--no-tags", "--prune", "origin",
                           f"+refs/heads/{branch}:refs/remotes/origin/{branch}", remote=True)
        except GitError as exc:
            if exc.kind != "branch_missing":
                raise
            heads = await self.remote_heads()
            if heads:
                shown = ", ".join(sorted(heads)[:10])
                raise GitError(f"the branch {branch!r} does not exist on the remote (it has {shown}); "
                               "create it or correct the branch setting", "branch_missing") from None
            return None
        return await self.rev(f"refs/remotes/origin/{branch}")

    async def remote_heads(self) -> list[str]:
        out = await self.run("ls-remote", "--heads", "origin", remote=True)
        return [line.split("refs/heads/", 1)[1] for line in out.splitlines() if "refs/heads/" in line]

    async def push(self, branch: str) -> None:
        await self.run("push", "-q", "--porcelain", "origin", f"refs/heads/{branch}:refs/heads/{branch}",
                       remote=True)

    async def rev(self, ref: str) -> str | None:
        out = await self.run("rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False)
        return out.strip() or None

    async def is_ancestor(self, older: str, newer: str) -> bool:
        await self.run("merge-base", "--is-ancestor", older, newer, check=False)
        return self.last_returncode == 0

    async def reset(self, branch: str, sha: str | None) -> None:
        """Make ``branch`` (checked out) and the working tree exactly ``sha`` (None: no commit yet)."""
        if sha is None:
            await self.run("symbolic-ref", "HEAD", f"refs/heads/{branch}")
            await self.run("update-ref", "-d", f"refs/heads/{branch}", check=False)
            await self.run("rm", "-r", "-q", "--cached", "--ignore-unmatch", ".")
        else:
            await self.run("checkout", "-q", "-f", "-B", branch, sha)
            await self.run("reset", "-q", "--hard", sha)
        await self.run("clean", "-q", "-f", "-d", "-x")

    async def commit_all(self, message: str, *, author: tuple[str, str, str], committer: tuple[str, str]) -> str | None:
        """Stage everything and commit; the new sha, or None when nothing changed."""
        await self.run("add", "-A", ".")
        await self.run("diff", "--cached", "--quiet", check=False)
        if self.last_returncode == 0:
            return None
        name, email, date = author
        env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date,
               "GIT_COMMITTER_NAME": committer[0], "GIT_COMMITTER_EMAIL": committer[1]}
        await self.run("commit", "-q", "--no-verify", "--no-gpg-sign", "-F", "-", stdin=message, env=env)
        return await self.rev("HEAD")

    async def log(self, revision_range: str) -> list[Commit]:
        """Commits of ``revision_range``, oldest first."""
        fmt = _FORMAT
        out = await self.run("log", "--reverse", f"--format={fmt}", revision_range, "--")
        commits = []
        for record in out.split("\x1e"):
            fields = record.strip("\n").split("\x1f")
            if len(fields) == 8:
                commits.append(Commit(*[f.strip() for f in fields]))
        return commits

    async def last_maestro_commit(self, ref: str, committer_email: str, path: str) -> Commit | None:
        """The newest commit of ``ref``'s history that Maestro made (its committer and trailers)
        for the catalog at ``path`` (a repository may hold several, each under its own prefix)."""
        fmt = _FORMAT
        out = await self.run("log", "-1", f"--format={fmt}", f"--committer=<{re.escape(committer_email)}>",
                             "--all-match", "--grep=^Maestro-Events: ", f"--grep=^Maestro-Path: {re.escape(path)}$",
                             ref, "--", check=False)
        fields = out.split("\x1e")[0].strip("\n").split("\x1f")
        return Commit(*[f.strip() for f in fields]) if len(fields) == 8 else None


_FORMAT = ("%H%x1f%an%x1f%ae%x1f%cn%x1f%ce%x1f%(trailers:key=Maestro-Events,valueonly,separator=)%x1f"
           "%(trailers:key=Maestro-Path,valueonly,separator=)%x1f%s%x1e")


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    author_name: str
    author_email: str
    committer_name: str
    committer_email: str
    events: str  # the Maestro-Events trailer ("first-last"), "" for commits people made
    path: str  # the Maestro-Path trailer: the catalog's folder in the repository
    subject: str

    def positions(self) -> tuple[int, int] | None:
        first, sep, last = self.events.partition("-")
        if not sep or not first.isdigit() or not last.isdigit():
            return None
        return int(first), int(last)

    def by_maestro(self, committer_email: str, path: str | None = None) -> bool:
        """Made by Maestro (for the catalog at ``path``, when given)."""
        mine = self.committer_email.lower() == committer_email.lower() and self.positions() is not None
        return mine and (path is None or self.path == path)

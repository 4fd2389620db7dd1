"""Git in tests: bare repositories the tests create, and clones where a test acts as a person.

Everything is the real ``git`` command; a person's clone uses its own identity (author and
committer), so Maestro sees a commit made by someone else, as it would from a laptop.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ENV = {
    "PATH": os.defpath + ":/usr/local/bin", "HOME": "/nonexistent", "LC_ALL": "C", "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
}


def git(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**ENV, **(env or {})}, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def bare(path: Path, branch: str = "main") -> str:
    """A new empty bare repository; its file:// URL."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "--bare", "-b", branch, ".")
    return f"file://{path}"


class Person:
    """A clone of the remote where a test edits files and pushes, as ``name <email>``."""

    def __init__(self, url: str, path: Path, name: str = "Ana Lima", email: str = "ana@example.com",
                 branch: str = "main") -> None:
        self.url, self.path, self.branch = url, path, branch
        self.identity = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                         "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
        if not path.exists():
            git(path.parent, "clone", "-q", "-b", branch, url, path.name)

    def pull(self) -> None:
        git(self.path, "fetch", "-q", "origin")
        git(self.path, "reset", "-q", "--hard", f"origin/{self.branch}")

    def write(self, relative: str, content: str) -> None:
        file = self.path / relative
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(content)

    def remove(self, relative: str) -> None:
        (self.path / relative).unlink()

    def commit(self, message: str) -> str:
        git(self.path, "add", "-A", ".")
        git(self.path, "commit", "-q", "-m", message, env=self.identity)
        return self.head()

    def push(self, check: bool = True) -> str:
        return git(self.path, "push", "-q", "origin", f"HEAD:{self.branch}", check=check)

    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD").strip()

    def read(self, relative: str) -> str:
        return (self.path / relative).read_text()


def log(repo: Path, *args: str, ref: str = "main") -> list[dict[str, str]]:
    """The branch's commits, newest first: sha, author, committer, subject, body."""
    out = git(repo, "log", "--format=%H%x1f%an <%ae>%x1f%cn <%ce>%x1f%s%x1f%B%x1e", *args, ref)
    commits = []
    for record in out.split("\x1e"):
        fields = record.strip("\n").split("\x1f")
        if len(fields) == 5:
            commits.append(dict(zip(("sha", "author", "committer", "subject", "body"), fields)))
    return commits


def show(repo: Path, path: str, ref: str = "main") -> str:
    return git(repo, "show", f"{ref}:{path}")


def files(repo: Path, ref: str = "main") -> list[str]:
    return sorted(git(repo, "ls-tree", "-r", "--name-only", ref).split())

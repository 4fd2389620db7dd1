"""``maestro`` against a remote server (issue 12, item 3): the real command, a real ``maestro serve``.

The commands run as a user would run them, in a child process with a configuration directory of
their own (``XDG_CONFIG_HOME``) and no database settings at all: only ``--url``/``--token`` or the
profile that ``maestro login`` saved. Bad input ends in one line and exit 2, failures in exit 1,
and never in a traceback.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from served import MAESTRO, Served, child_env, free_port, served

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(pg_admin_dsn, tmp_path_factory.mktemp("cli")) as s:
        yield s


@pytest.fixture(scope="module")
def team(server: Served) -> dict:
    group = server.call("POST", "/api/v1/groups", {"name": "ops"})
    group_id = group.get("id") or group["group_id"]
    daily = server.call("POST", "/api/v1/frequencies", {"name": "daily", "period": 86400, "active": False})
    for name, query in (("base", "SELECT 1 AS n"), ("top", "SELECT n + 1 AS n FROM cli.base"),
                        ("bad", "SELECT 1 AS a,\n  nosuchfunction(2) AS b")):
        server.call("POST", "/api/v1/tables", {"group_id": group_id, "dataset": "cli", "name": name, "query": query,
                                               "frequency_id": daily["id"] if name != "bad" else None})
    server.call("POST", "/api/v1/tables", {
        "group_id": group_id, "dataset": "cli", "name": "drops", "kind": "external",
        "external": {"format": "csv", "skip_leading_rows": 1, "schema": [{"name": "v", "type": "INT64"}]}})
    return {"group": group_id, "token": server.service_token("cleo", groups=(group_id,)), "frequency": daily}


def maestro(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = child_env(XDG_CONFIG_HOME=str(config), COLUMNS="200")
    done = subprocess.run([MAESTRO, *args], env=env, capture_output=True, text=True, timeout=300, input=stdin)
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "config"


def test_login_saves_a_profile_that_later_commands_use(server: Served, team: dict, config: Path) -> None:
    done = maestro(config, "login", "--url", server.url, "--token", team["token"])
    assert done.returncode == 0, done.stderr
    profiles = config / "maestro" / "profiles.toml"
    assert profiles.stat().st_mode & 0o777 == 0o600
    listed = maestro(config, "tables", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {t["name"] for t in json.loads(listed.stdout)} >= {"base", "top", "bad", "drops"}
    people = maestro(config, "tables", "list", "--dataset", "cli")
    assert "cli.top" in people.stdout and "TABLE" in people.stdout


def test_run_wait_succeeds_then_show_runs_and_costs(server: Served, team: dict, config: Path) -> None:
    flags = ("--url", server.url, "--token", team["token"])
    done = maestro(config, "run", "cli.base", "--wait", *flags)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "base: succeeded" in done.stdout and "succeeded" in done.stdout.splitlines()[-1]
    shown = json.loads(maestro(config, "tables", "show", "cli.base", "--json", *flags).stdout)
    assert shown["status"]["state"] == "succeeded" and isinstance(shown["number"], int)
    by_number = maestro(config, "tables", "show", str(shown["number"]), *flags)
    assert by_number.returncode == 0 and "succeeded" in by_number.stdout

    runs = json.loads(maestro(config, "runs", "list", "--json", *flags).stdout)
    run_id = runs[0]["id"]
    assert maestro(config, "runs", "show", run_id, *flags).returncode == 0
    watched = maestro(config, "runs", "watch", run_id, *flags)
    assert watched.returncode == 0 and f"run {run_id} succeeded" in watched.stdout
    costs = json.loads(maestro(config, "costs", "--by", "table", "--json", *flags).stdout)
    assert costs["by"] == "table" and isinstance(costs["items"], list)


def test_a_failing_run_exits_1_with_the_error(server: Served, team: dict, config: Path) -> None:
    done = maestro(config, "tables", "run", "cli.bad", "--wait", "--url", server.url, "--token", team["token"])
    assert done.returncode == 1
    assert "bad: failed" in done.stdout and "nosuchfunction" in done.stdout.lower()


def test_plan_and_load(server: Served, team: dict, config: Path, tmp_path: Path) -> None:
    flags = ("--url", server.url, "--token", team["token"])
    plan = maestro(config, "plan", "daily", "--json", *flags)
    assert plan.returncode == 0, plan.stderr
    assert [t["name"] for t in json.loads(plan.stdout)["tables"]] == ["cli.base", "cli.top"]
    people = maestro(config, "plan", "daily", *flags)
    assert "2 table(s)" in people.stdout
    source = tmp_path / "drops.csv"
    source.write_text("v\n1\n2\n")
    loaded = maestro(config, "load", "cli.drops", str(source), *flags)
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded 2 row(s)" in loaded.stdout


def test_apply_export_token_and_config_through_the_api(server: Served, team: dict, config: Path, tmp_path: Path) -> None:
    flags = ("--url", server.url, "--token", team["token"])
    exported = tmp_path / "catalog"
    done = maestro(config, "export", str(exported), *flags)
    assert done.returncode == 0, done.stderr
    assert (exported / "cli" / "top.sql").exists()
    (exported / "cli" / "extra.sql").write_text("SELECT n * 10 AS n FROM cli.top\n")
    planned = maestro(config, "apply", str(exported), "--dry-run", *flags)
    assert planned.returncode == 0 and "+ create cli.extra" in planned.stdout, planned.stderr
    applied = maestro(config, "apply", str(exported), *flags)
    assert applied.returncode == 0, applied.stderr
    history = server.call("GET", "/api/v1/tables?dataset=cli&q=extra")["tables"]
    assert [t["created_by"] for t in history] == ["user:cleo"]  # the caller is the actor, not the CLI

    token = maestro(config, "token", "create", "--name", "ci", *flags)
    assert token.returncode == 0 and token.stdout.startswith("mae_"), token.stderr
    refused = maestro(config, "config", "show", *flags)  # configuration is for administrators
    assert refused.returncode == 2 and refused.stderr.startswith("error: forbidden by rule 'admin'")
    shown = maestro(config, "config", "show", "slack", "--json", "--url", server.url, "--token", server.admin_token)
    assert shown.returncode == 0 and json.loads(shown.stdout)[0]["section"] == "slack"


def test_bad_input_and_failures_are_one_line(server: Served, team: dict, config: Path) -> None:
    unknown = maestro(config, "tables", "show", "cli.nothing", "--url", server.url, "--token", team["token"])
    assert unknown.returncode == 2 and unknown.stderr.strip().count("\n") == 0
    assert "no table 'cli.nothing'" in unknown.stderr
    wrong = maestro(config, "runs", "list", "--url", server.url, "--token", "mae_nope_nope")
    assert wrong.returncode == 2 and "token" in wrong.stderr
    down = maestro(config, "runs", "list", "--url", f"http://127.0.0.1:{free_port()}", "--token", "x")
    assert down.returncode == 1 and "cannot connect" in down.stderr
    nowhere = maestro(config, "runs", "list")  # no --url and no profile
    assert nowhere.returncode == 2 and "maestro login" in nowhere.stderr


def test_import_runs_an_import_table_and_refuses_other_kinds(server: Served, team: dict, config: Path) -> None:
    """``maestro import TABLE --wait`` runs the import through the API (``--full`` first asks for a
    re-import); a table of another kind is bad input (exit 2, one line)."""
    import asyncio

    import asyncpg

    # The source: a table in the served database's own PostgreSQL (a database of the server's).
    async def source() -> None:
        conn = await asyncpg.connect(server.dsn)
        try:
            await conn.execute("CREATE SCHEMA IF NOT EXISTS shop; CREATE TABLE shop.items (id int PRIMARY KEY, v text)")
            await conn.execute("INSERT INTO shop.items SELECT g, 'v' || g FROM generate_series(1, 25) g")
        finally:
            await conn.close()

    asyncio.run(source())
    from urllib.parse import urlsplit

    password = urlsplit(server.dsn).password or ""
    body = {"name": "shop", "driver": "postgres", "dsn": server.dsn.replace(f":{password}@", "@", 1),
            "landing_dataset": "landing"}
    if password:
        body["password"] = password
    server.call("POST", "/api/v1/databases", body)
    server.call("POST", "/api/v1/tables", {
        "group_id": team["group"], "dataset": "cli", "name": "items", "kind": "import",
        "import": {"source_database": "shop", "source_table": "shop.items", "id_column": "id"}})
    args = ("--url", server.url, "--token", team["token"])
    done = maestro(config, "import", "cli.items", "--wait", "--json", *args)
    assert done.returncode == 0, done.stderr
    again = maestro(config, "import", "cli.items", "--full", "--wait", "--json", *args)
    assert again.returncode == 0, again.stderr
    state = server.call("GET", f"/api/v1/tables/{_table_id(server, 'cli.items')}/import")
    # The last import is the full one asked for, and the request it answered is no longer pending.
    assert state["last_import"]["full"] is True and state["reimport_requested"] is None, state
    wrong = maestro(config, "import", "cli.base", *args)
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines()[-1] == (
        "Error: cli.base is a summary table, not an import")


def _table_id(server: Served, name: str) -> str:
    found = server.call("GET", f"/api/v1/table-lookup?ref={name}")
    return found.get("id") or found["table_id"]

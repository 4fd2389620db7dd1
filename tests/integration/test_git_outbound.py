"""Outbound: every catalog change is a commit on a real bare repository, as `maestro export` writes it."""

from __future__ import annotations

from pathlib import Path

from git_repos import bare, files, git, log, show
from git_setup import configure, person, settled, spec, worker

from maestro.events.catalog import FrequencySpec
from maestro.events.model import Metadata
from maestro.handlers.catalog import apply, folder
from maestro.runtime import Runtime


async def test_each_api_change_is_one_commit_by_its_author(runtime: Runtime, tmp_path: Path) -> None:
    url = bare(tmp_path / "remote.git")
    await configure(runtime, url)
    sync = worker(runtime, tmp_path / "data")
    await settled(sync)  # the first commit: the (empty) catalog
    ana = await person(runtime, "Ana Lima", "ana@example.com")
    bo = await person(runtime, "Bo Chen", "bo@example.com")

    view = await runtime.catalog.create_table(spec("orders", labels={"team": "growth"}), ana)
    await settled(sync)
    await runtime.catalog.update_table(view.table_id, {"query": "SELECT 2 AS x"}, bo)
    await settled(sync)
    await runtime.catalog.update_table(view.table_id, {"name": "orders_v2", "description": "v2"}, ana)
    await settled(sync)
    await runtime.catalog.delete_table(view.table_id, bo)
    await settled(sync)
    await runtime.catalog.restore_table(view.table_id, ana)
    await settled(sync)

    remote = tmp_path / "remote.git"
    commits = log(remote)
    assert [c["subject"] for c in commits] == [
        "Restore sales.orders_v2",
        "Delete sales.orders_v2",
        "Rename sales.orders -> sales.orders_v2 (description)",
        "Update sales.orders (query)",
        "Create sales.orders",
        "Export the catalog: 0 tables",
    ]
    assert [c["author"] for c in commits[:5]] == [
        "Ana Lima <ana@example.com>", "Bo Chen <bo@example.com>", "Ana Lima <ana@example.com>",
        "Bo Chen <bo@example.com>", "Ana Lima <ana@example.com>",
    ]
    assert {c["committer"] for c in commits} == {"Maestro <maestro@maestro.test>"}
    assert all("Maestro-Events: " in c["body"] for c in commits)
    # The file is what `maestro export` writes, and only it (no volatile state anywhere).
    table = await runtime.catalog.get_table(view.table_id)
    rendered = folder.render(folder.TableSpec.model_validate(table.spec))
    assert show(remote, "sales/orders_v2.sql") == rendered["orders_v2.sql"]
    assert files(remote) == [".maestro-export", "sales/orders_v2.sql"]

    # Each version of the table names its commit in the history.
    history = await runtime.catalog.history(view.table_id)
    by_subject = {c["sha"]: c["subject"] for c in commits}
    assert [by_subject[v["commit"]] for v in history] == [
        "Create sales.orders", "Update sales.orders (query)",
        "Rename sales.orders -> sales.orders_v2 (description)",
        "Delete sales.orders_v2", "Restore sales.orders_v2",
    ]


async def test_an_apply_is_one_commit_with_its_plan(runtime: Runtime, tmp_path: Path) -> None:
    url = bare(tmp_path / "remote.git")
    await configure(runtime, url)
    sync = worker(runtime, tmp_path / "data")
    await runtime.catalog.create_table(spec("old"), Metadata(actor="cli:ana"))
    await settled(sync)
    specs = [spec("a"), spec("b", "SELECT * FROM sales.a"), spec("c", dataset="web")]
    plan = apply.plan(specs, await apply.load_rows(runtime.catalog), prune=True)
    await apply.execute(plan, runtime.catalog, Metadata(actor="cli:ana"))
    await settled(sync)

    remote = tmp_path / "remote.git"
    newest = log(remote)[0]
    assert newest["subject"] == "Apply: 3 created, 0 updated, 1 deleted"
    assert newest["body"].splitlines()[2:6] == [
        "+ create sales.a", "+ create sales.b", "+ create web.c", "- delete sales.old"]
    assert newest["author"] == "ana <ana@maestro.test>"
    assert files(remote) == [".maestro-export", "sales/a.sql", "sales/b.sql", "web/c.sql"]
    assert len(log(remote)) == 2  # the first export, then the apply: one commit


async def test_first_commit_is_the_export_of_the_catalog(runtime: Runtime, tmp_path: Path) -> None:
    ana = await person(runtime, "Ana Lima", "ana@example.com")
    frequency = await runtime.catalog.create_frequency(FrequencySpec(name="daily", period=86400), ana)
    for n in range(5):
        await runtime.catalog.create_table(spec(f"t{n}", description=f"line one\nline {n}", frequency_id=frequency), ana)
    gone = await runtime.catalog.create_table(spec("gone"), ana)
    await runtime.catalog.delete_table(gone.table_id, ana)
    url = bare(tmp_path / "remote.git", branch="trunk")
    await configure(runtime, url, branch="trunk", path_prefix="warehouse/catalog")
    await settled(worker(runtime, tmp_path / "data"))

    exported = tmp_path / "export"
    folder.export(await apply.load_rows(runtime.catalog), exported)
    remote = tmp_path / "remote.git"
    tree = [p for p in files(remote, "trunk")]
    expected = sorted(str(p.relative_to(exported)) for p in exported.rglob("*") if p.is_file())
    assert sorted(p.removeprefix("warehouse/catalog/") for p in tree if p.endswith(".sql") or "export" in p) == expected
    for path in expected:
        assert show(remote, f"warehouse/catalog/{path}", "trunk") == (exported / path).read_text()
    assert "daily" in show(remote, "warehouse/catalog/frequencies.yaml", "trunk")
    assert log(remote, ref="trunk")[0]["subject"] == "Export the catalog: 5 tables"


async def test_remote_moved_means_fetch_then_our_commits_on_top(runtime: Runtime, tmp_path: Path) -> None:
    from git_repos import Person

    url = bare(tmp_path / "remote.git")
    await configure(runtime, url)  # mode push: people's files are kept, not applied
    sync = worker(runtime, tmp_path / "data")
    await settled(sync)
    someone = Person(url, tmp_path / "someone")
    someone.write("README.md", "# The catalog\n")
    someone.commit("Add a README")
    someone.push()
    ana = await person(runtime, "Ana Lima", "ana@example.com")
    await runtime.catalog.create_table(spec("orders"), ana)
    await settled(sync)
    commits = log(tmp_path / "remote.git")
    assert [c["subject"] for c in commits] == ["Create sales.orders", "Add a README", "Export the catalog: 0 tables"]
    assert files(tmp_path / "remote.git") == [".maestro-export", "README.md", "sales/orders.sql"]
    git(tmp_path / "remote.git", "fsck", "--no-progress")


async def test_frequencies_and_datasets_are_commits_too(runtime: Runtime, tmp_path: Path) -> None:
    from maestro.events.catalog import DatasetRegistered

    url = bare(tmp_path / "remote.git")
    await configure(runtime, url)
    sync = worker(runtime, tmp_path / "data")
    await settled(sync)
    ana = await person(runtime, "Ana Lima", "ana@example.com")
    frequency = await runtime.catalog.create_frequency(FrequencySpec(name="daily", period=86400), ana)
    await settled(sync)
    await runtime.catalog.update_frequency(frequency, {"offset": 3600}, Metadata(actor=ana.actor))
    await settled(sync)
    await runtime.catalog.register_dataset(DatasetRegistered(dataset="sales", description="Sales"), Metadata(actor=ana.actor))
    await settled(sync)
    remote = tmp_path / "remote.git"
    assert [c["subject"] for c in log(remote)][:3] == [
        "Register dataset sales", "Update frequency daily (offset)", "Create frequency daily"]
    import yaml

    assert yaml.safe_load(show(remote, "frequencies.yaml"))[frequency]["offset"] == 3600
    assert yaml.safe_load(show(remote, "datasets.yaml")) == {"sales": {"project": None, "description": "Sales"}}

"""Property-based tests of the whole HTTP API from its own OpenAPI document (issue 8, item 15).

schemathesis generates requests for every operation of ``GET /api/v1/openapi.json`` — valid ones
and, as many, invalid ones — and sends them to a real server (the app on a local port, the test
PostgreSQL, the local BigQuery and GCS with the runner and scheduler running), once as an
administrator and once as a plain user (a member of the group that owns the seeded tables), each
on a fresh database. Every answer must be no server error and match the document: a documented
status, the documented content type, a body of the documented shape.

Path parameters are half made up (404s, odd characters) and half the ids of seeded objects (a
table with a parent, a frequency, a run, a group, a user, a spare token, a database, the
``pricing`` section, a stream), so the handlers behind the 404 are fuzzed too. No route is
excluded. Destructive operations (DELETE, configuration changes) run last, so they do not empty
the seeded objects before the rest has used them; the configuration section fixed in paths is
``pricing``: fuzzing ``bigquery`` would point the running services at nowhere, and made-up
section names are 404s anyway. The SSE route is fuzzed: a made-up run has no events (404 at once)
and the seeded run's stream ends when the run does (the local BigQuery runs ``SELECT 1``).

A failure is reported with the check it broke and a curl line that reproduces it.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from maestro.events.catalog import FrequencySpec, TableSpec
from people import TESTS, user_token

pytestmark = pytest.mark.slow

CASES_PER_PRINCIPAL = int(os.environ.get("MAESTRO_FUZZ_CASES", "2600"))  # >= 5,000 in all
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


async def _seed(runtime, user_id: str, group_id: str) -> dict[str, str]:
    """Objects for the path parameters: {parameter name: id}."""
    frequency_id = await runtime.catalog.create_frequency(FrequencySpec(name="fuzz daily", period=86400), TESTS)
    parent = await runtime.catalog.create_table(
        TableSpec(dataset="fuzz", name="parent", query="SELECT 1 AS x", group_id=group_id, frequency_id=frequency_id),
        TESTS,
    )
    child = await runtime.catalog.create_table(
        TableSpec(dataset="fuzz", name="child", query="SELECT x FROM fuzz.parent", group_id=group_id,
                  frequency_id=frequency_id),
        TESTS,
    )
    run_id, _ = await runtime.runs.plan_frequency(frequency_id, slot=None, trigger="manual", actor=TESTS)
    await runtime.users.ensure_service_user("bystander", "bystander", TESTS)
    token_id, _ = await runtime.tokens.create(user_id, "spare", TESTS)
    await runtime.config_service.add_database(
        "crm", {"driver": "postgres", "dsn": "postgresql://maestro@localhost/crm", "landing_dataset": "crm"}, TESTS
    )
    job_id = None  # a job of the seeded run (GET /api/v1/jobs/{job_id}), once the runner planned one
    for _ in range(200):
        if job_id := await runtime.pool.fetchval("SELECT job_id FROM jobs WHERE run_id = $1 LIMIT 1", run_id):
            break
        await asyncio.sleep(0.05)
    return {
        "table_id": child.table_id, "frequency_id": frequency_id, "run_id": run_id, "group_id": group_id,
        "job_id": job_id or "nothing-here",
        "user_id": "bystander", "token_id": token_id, "name": "crm", "section": "pricing",
        "stream_id": f"table-{parent.table_id}", "dataset": "fuzz", "delivery_id": "dlv_nothing_here",
    }


def _destructive(operation: Any) -> bool:
    return operation.method.upper() == "DELETE" or (
        operation.method.upper() == "PUT" and operation.path.startswith("/api/v1/config")
    )


def _fuzz(base_url: str, token: str, known: dict[str, str], budget: int) -> tuple[int, list[str], Counter]:
    """Run every operation in both modes; return (cases sent, failure reports, statuses seen)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json")
    operations = sorted((r.ok() for r in schema.get_all_operations()), key=lambda o: (_destructive(o), o.label))
    # Operations without parameters run out of distinct cases early: the others make up for them.
    per_run = max(1, budget * 5 // (len(operations) * len(MODES) * 4))
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    sent = 0
    failures: list[str] = []
    statuses: Counter[tuple[str, int]] = Counter()
    for operation in operations:
        names = re.findall(r"{(\w+)}", operation.path)
        for mode in MODES:
            strategy = operation.as_strategy(generation_mode=mode)
            if names:
                strategy = st.one_of(
                    strategy, operation.as_strategy(generation_mode=mode, path_parameters={n: known[n] for n in names})
                )

            @settings(
                max_examples=per_run, deadline=None, database=None, derandomize=True,
                phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: Any) -> None:
                nonlocal sent
                sent += 1
                response = case.call_and_validate(base_url=base_url, session=session, checks=CHECKS, timeout=60)
                statuses[(operation.label, response.status_code)] += 1

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - report every failing operation
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    return sent, failures, statuses


@pytest.mark.parametrize("admin", [True, False], ids=["admin", "plain-user"])
async def test_every_route_answers_within_its_documented_schema(admin: bool, runtime, services) -> None:
    from aiohttp.test_utils import TestServer

    from maestro.http.app import create_app

    group = await runtime.users.create_group("fuzzers", TESTS)
    token = await user_token(runtime, "fuzzer", admin=admin, groups=(group.group_id,))
    known = await _seed(runtime, "fuzzer", group.group_id)
    server = TestServer(create_app(runtime.settings, runtime=runtime), host="127.0.0.1")
    await server.start_server()
    try:
        started = time.monotonic()
        base_url = str(server.make_url("")).rstrip("/")
        sent, failures, statuses = await asyncio.to_thread(_fuzz, base_url, token, known, CASES_PER_PRINCIPAL)
        took = time.monotonic() - started
    finally:
        await server.close()
    seen = "\n".join(f"  {label} -> {status}: {n}" for (label, status), n in sorted(statuses.items()))
    print(f"{sent} cases in {took:.0f} s\n{seen}")
    assert not failures, f"{len(failures)} operations failed:\n\n" + "\n\n".join(failures)
    assert sent >= CASES_PER_PRINCIPAL, f"only {sent} cases in {took:.0f} s"
    # The seeded objects were reached: not every answer was a made-up id's 404.
    assert sum(n for (label, status), n in statuses.items() if "{" in label and status < 300) > 50

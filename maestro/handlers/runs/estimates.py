"""Estimates before running: a table's dry run, and the next run of a frequency with its total."""

from __future__ import annotations

import asyncio
from typing import Any

from maestro.errors import ValidationFailed
from maestro.handlers.catalog.service import CatalogService
from maestro.handlers.runs.service import RunService

TIB = 2**40


def estimate(result: Any, price_per_tib: float) -> dict[str, Any]:
    """A dry run's answer as the API shows it: validity, bytes, dollars, the error if any."""
    return {
        "valid": result.valid,
        "bytes_processed": result.bytes_processed,
        "usd": round(result.bytes_processed / TIB * price_per_tib, 6),
        "error": {"reason": result.error.reason, "message": result.error.message} if result.error else None,
    }


async def dry_run_table(catalog: CatalogService, bigquery: Any, table_id: str, price_per_tib: float) -> dict[str, Any]:
    view = await catalog.get_table(table_id)
    if view.spec["kind"] != "summary":
        raise ValidationFailed(f"a dry run needs a query; this is a {view.spec['kind']} table")
    result = await bigquery.dry_run(view.spec["query"], legacy_sql=view.spec["legacy_sql"])
    return estimate(result, price_per_tib)


async def frequency_plan(runs: RunService, bigquery: Any, frequency_id: str, price_per_tib: float) -> dict[str, Any]:
    """The next run's tables in start order, each with its estimate, and the total."""
    preview = await runs.preview(frequency_id)
    results = await asyncio.gather(
        *(bigquery.dry_run(t["query"], legacy_sql=t["legacy_sql"]) for t in preview["tables"])
    )
    tables = [
        {k: v for k, v in t.items() if k not in ("query", "legacy_sql")} | {"estimate": estimate(r, price_per_tib)}
        for t, r in zip(preview["tables"], results, strict=True)
    ]
    total = sum(r.bytes_processed for r in results)
    return {
        **{k: v for k, v in preview.items() if k != "tables"},
        "tables": tables,
        "total": {"bytes_processed": total, "usd": round(total / TIB * price_per_tib, 6)},
    }

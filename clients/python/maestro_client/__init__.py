"""maestro-client: Maestro from Python, blocking (:class:`Maestro`) or async (:class:`AsyncMaestro`).

    from maestro_client import Maestro
    with Maestro("https://maestro.example.com", token="mae_...") as m:
        table = m.table("analytics.daily_orders")   # or its number, m.table(42)
        table.wait(timeout=3600)                     # its next successful run
        rows = list(csv.reader(table.reader()))      # every extract file, one CSV

See docs/client.md.
"""

from maestro_client._async import AsyncMaestro, AsyncTable
from maestro_client._retry import RetryPolicy
from maestro_client._sync import Maestro, Table
from maestro_client.ddl import pg_create_table
from maestro_client.errors import (
    ApiError,
    AuthenticationFailed,
    BadRequest,
    Conflict,
    ConnectionFailed,
    MaestroClientError,
    NotFound,
    PermissionDenied,
    RateLimited,
    RunFailed,
    ServerError,
    WaitTimeout,
)
from maestro_client.models import Column, Costs, CostItem, Extract, ExtractFile, Load, Run, RunTable, Status, TableInfo

__all__ = [
    "ApiError", "AsyncMaestro", "AsyncTable", "AuthenticationFailed", "BadRequest", "Column", "Conflict",
    "ConnectionFailed", "CostItem", "Costs", "Extract", "ExtractFile", "Load", "Maestro", "MaestroClientError",
    "NotFound", "PermissionDenied", "RateLimited", "RetryPolicy", "Run", "RunFailed", "RunTable", "ServerError",
    "Status", "Table", "TableInfo", "WaitTimeout", "pg_create_table",
]

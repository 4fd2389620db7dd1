"""Source databases for import tests: the MariaDB on 127.0.0.1:3306 (root, no password)."""

from __future__ import annotations

import aiomysql

MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


async def mysql_execute(database: str | None, *statements: str) -> None:
    """Run statements on the test MariaDB (in ``database``, or none), autocommitted."""
    conn = await aiomysql.connect(**MYSQL, db=database, autocommit=True)
    try:
        async with conn.cursor() as cur:
            for statement in statements:
                await cur.execute(statement)
    finally:
        conn.close()

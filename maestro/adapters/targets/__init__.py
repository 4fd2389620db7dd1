"""Target databases for exports: PostgreSQL and MySQL/MariaDB (docs/db-export.md)."""

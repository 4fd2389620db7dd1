"""The catalog: tables, their SQL and the dependency graph between them."""

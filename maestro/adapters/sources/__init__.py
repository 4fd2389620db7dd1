"""Source databases an import reads from: PostgreSQL (``postgres``) and MySQL/MariaDB (``mysql``).

Each module opens one read-only, repeatable-read transaction on the source, discovers the
columns an :class:`~maestro.catalog.import_query.ImportQuery` reads (``discover``) and streams its
rows as ``pyarrow.RecordBatch`` values of the declared schema (``read``), in memory bounded by the
batch size whatever the table's size. ``columns`` holds what both share: the declared column, the
NUMERIC / BIGNUMERIC rule, the BigQuery schema and the conversions. The type tables are in
docs/imports.md.
"""

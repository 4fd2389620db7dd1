"""BigQuery job configurations from our job snapshots (JobConfig): queries, extracts, loads.

Everything explicit (STYLE.md item 11): nothing depends on the client's defaults, so a job runs
the same against Google and the local stack, and the same after an upgrade of the client.
"""

from __future__ import annotations

from google.cloud import bigquery

from maestro.events.runs import JobConfig, LoadField

# Catalog names (ExtractSettings) and BigQuery's own names both map to BigQuery's.
_FORMATS = {
    "csv": "CSV",
    "ndjson": "NEWLINE_DELIMITED_JSON",
    "json": "NEWLINE_DELIMITED_JSON",
    "newline_delimited_json": "NEWLINE_DELIMITED_JSON",
    "avro": "AVRO",
    "parquet": "PARQUET",
}
_COMPRESSIONS = {"": None, "none": None, "gzip": "GZIP", "deflate": "DEFLATE", "snappy": "SNAPPY"}

def query_job_config(config: JobConfig) -> bigquery.QueryJobConfig:
    """Everything explicit (STYLE.md item 11): nothing depends on the client's defaults."""
    job = bigquery.QueryJobConfig(use_legacy_sql=config.legacy_sql, labels=dict(config.labels))
    if config.maximum_bytes_billed is not None:  # None would be sent as the string "None"
        job.maximum_bytes_billed = config.maximum_bytes_billed
    if config.destination:
        job.destination = config.destination
        job.write_disposition = config.write_disposition
        job.create_disposition = bigquery.CreateDisposition.CREATE_IF_NEEDED
        if config.legacy_sql:
            job.allow_large_results = True  # legacy SQL caps results at 128 MB without it
        _partition_and_cluster(job, config)
    return job


def extract_job_config(config: JobConfig) -> bigquery.ExtractJobConfig:
    fmt = _FORMATS.get(config.format.lower(), config.format.upper()) if config.format else "CSV"
    job = bigquery.ExtractJobConfig(destination_format=fmt, labels=dict(config.labels))  # type: ignore[no-untyped-call]
    if compression := _COMPRESSIONS.get(config.compression.lower(), config.compression.upper()):
        job.compression = compression
    if fmt == "CSV":
        job.print_header = True
    return job


def load_job_config(config: JobConfig) -> bigquery.LoadJobConfig:
    """Everything explicit, as for queries: format, schema or autodetect, dispositions."""
    job = bigquery.LoadJobConfig(
        source_format=config.source_format, write_disposition=config.write_disposition,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        labels=dict(config.labels), max_bad_records=config.max_bad_records,
    )  # fmt: skip
    if config.load_schema:
        job.schema = [_schema_field(field) for field in config.load_schema]
    job.autodetect = config.autodetect
    if config.source_format == "CSV":
        if config.skip_leading_rows is not None:  # unset: autodetect decides whether a header is there
            job.skip_leading_rows = config.skip_leading_rows
    elif config.source_format == "PARQUET":
        options = bigquery.ParquetOptions()
        options.enable_list_inference = config.enable_list_inference
        job.parquet_options = options
    if config.decimal_target_types:
        job.decimal_target_types = list(config.decimal_target_types)
    if config.schema_update_options:
        job.schema_update_options = list(config.schema_update_options)
    _partition_and_cluster(job, config)  # as for query destinations
    return job


def _schema_field(field: LoadField) -> bigquery.SchemaField:
    members = [_schema_field(member) for member in field.fields]
    return bigquery.SchemaField(field.name, field.type, mode=field.mode, fields=members)


def _partition_and_cluster(job: bigquery.QueryJobConfig | bigquery.LoadJobConfig, config: JobConfig) -> None:
    if part := config.partitioning:
        # type "day": ingestion-time partitioning (no field); "column": by that column.
        field = part.get("column") if part.get("type") == "column" else None
        granularity = str(part.get("granularity") or "DAY").upper()  # HOUR DAY MONTH YEAR
        job.time_partitioning = bigquery.TimePartitioning(type_=granularity, field=field)
    if config.clustering:
        job.clustering_fields = list(config.clustering)

"""External tables, pure parts: the load job an upload becomes, which objects may load, job ids."""

from __future__ import annotations

import datetime as dt

import pytest

from maestro.adapters.bigquery_jobconfig import load_job_config
from maestro.errors import ObjectNotLoadable, ValidationFailed
from maestro.events.catalog import TableSpec
from maestro.handlers.runs.uploads import load_config, load_job_id, object_uri, upload_target


def _spec(**external) -> TableSpec:
    return TableSpec.model_validate({
        "dataset": "ds", "name": "daily files", "kind": "external", "external": external,
        "owner_id": "ann", "group_id": "growth", "labels": {"team": "x"},
    })


def test_a_csv_with_no_declared_header_leaves_skip_leading_rows_to_autodetect() -> None:
    config = load_config("t1", _spec(format="csv"), "proj-123", "gs://b/uploads/ds/daily files/a.csv", 7)
    assert config.kind == "load" and config.source_format == "CSV" and config.autodetect
    assert config.skip_leading_rows is None and config.source_generations == [7] and config.delete_source
    api = load_job_config(config).to_api_repr()["load"]
    assert "skipLeadingRows" not in api and api["autodetect"] is True  # Google: autodetect finds the header
    assert config.destination == "proj-123.ds.daily files" and config.write_disposition == "WRITE_TRUNCATE"
    assert config.labels == {"team": "x", "maestro_table": "t1", "maestro_run": "adhoc",
                             "maestro_owner": "ann", "maestro_group": "growth"}


def test_declared_schemas_header_lines_and_binary_formats() -> None:
    fields = [{"name": "id", "type": "INT64"}]
    config = load_config("t1", _spec(format="csv", schema=fields, skip_leading_rows=2, delete_after_load=False),
                         "proj-123", "gs://b/x", 1)
    api = load_job_config(config).to_api_repr()["load"]
    assert api["skipLeadingRows"] == "2" and not config.autodetect and not config.delete_source
    assert [f.name for f in config.load_schema] == ["id"]
    for fmt, bq in (("parquet", "PARQUET"), ("avro", "AVRO"), ("ndjson", "NEWLINE_DELIMITED_JSON")):
        config = load_config("t1", _spec(format=fmt), "proj-123", "gs://b/x", 1)
        assert config.source_format == bq and config.autodetect == (fmt == "ndjson")


def test_the_load_job_id_is_one_per_table_object_and_generation() -> None:
    one = load_job_id("t1", "gs://b/o", 1)
    assert one == load_job_id("t1", "gs://b/o", 1)
    assert len({one, load_job_id("t1", "gs://b/o", 2), load_job_id("t2", "gs://b/o", 1), load_job_id("t1", "gs://b/p", 1)}) == 4


def test_only_the_tables_own_uploads_may_load() -> None:
    spec = _spec(format="csv")
    prefix = "uploads/ds/daily files/"
    assert object_uri({"name": prefix + "a.csv"}, "b", spec) == f"gs://b/{prefix}a.csv"
    assert object_uri({"object": f"gs://b/{prefix}x/y.csv"}, "b", spec) == f"gs://b/{prefix}x/y.csv"
    for body in ({"object": f"gs://other/{prefix}a.csv"}, {"name": "uploads/ds/other/a.csv"}, {"name": prefix},
                 {"name": prefix + "../../x"}, {"name": prefix + "a//b"}, {"name": prefix + "a\nb"}):
        with pytest.raises(ObjectNotLoadable):
            object_uri(body, "b", spec)
    for body in ({}, {"object": "x", "name": "y"}, {"object": "https://b/x"}, {"name": ""}, {"name": 3}):
        with pytest.raises(ValidationFailed):
            object_uri(body, "b", spec)


def test_the_upload_target_is_a_new_signed_put_under_the_prefix(tmp_path) -> None:
    """Signing is local (the real client and a key of our own): no request is made."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from maestro.adapters.google import local_signer

    client = storage.Client(project="proj-123", credentials=AnonymousCredentials())
    at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    target = upload_target(client, local_signer(tmp_path, "proj-123"), "b", _spec(format="parquet"),
                           dt.timedelta(hours=1), now=at)
    assert target["object"].startswith(f"gs://b/uploads/ds/daily files/{at:%Y%m%dT%H%M%SZ}-")
    assert target["object"].endswith(".parquet") and target["expires_at"] == (at + dt.timedelta(hours=1)).isoformat()
    assert target["method"] == "PUT" and target["content_type"] == "application/vnd.apache.parquet"
    assert "/b/uploads/ds/daily%20files/" in target["url"] and "X-Goog-Expires=3600" in target["url"]
    assert "X-Goog-SignedHeaders=content-type%3Bhost" in target["url"]

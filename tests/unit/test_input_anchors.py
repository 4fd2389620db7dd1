"""Name patterns match the whole value: Python's ``$`` also matches before a trailing newline."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from maestro.adapters.secrets import SecretBox, generate_secret
from maestro.events.catalog import ColumnName, DatasetName, ProjectId, TableName, TableSpec
from maestro.events.config import DATABASE_NAME, BigQuerySection, DatabaseName
from maestro.events.users import GroupName, UserId


@pytest.mark.parametrize(
    ("annotation", "good"),
    [
        (DatasetName, "mart"),
        (TableName, "daily revenue"),
        (ProjectId, "my-project"),
        (ColumnName, "country"),
        (UserId, "ada.lovelace"),
        (GroupName, "Data team"),
        (DatabaseName, "crm"),
    ],
)
def test_a_trailing_newline_is_refused(annotation: object, good: str) -> None:
    adapter = TypeAdapter(annotation)
    assert adapter.validate_python(good) == good
    with pytest.raises(ValidationError):
        adapter.validate_python(good + "\n")


def test_labels_bucket_location_and_database_names_match_whole_values() -> None:
    TableSpec(dataset="d", name="n", query="SELECT 1", labels={"team": "data"})
    with pytest.raises(ValidationError):
        TableSpec(dataset="d", name="n", query="SELECT 1", labels={"team\n": "data"})
    with pytest.raises(ValidationError):
        TableSpec(dataset="d", name="n", query="SELECT 1", labels={"team": "data\n"})
    BigQuerySection(bucket="my-bucket", location="EU")
    for bad in ({"bucket": "my-bucket\n"}, {"location": "EU\n"}):
        with pytest.raises(ValidationError):
            BigQuerySection(**bad)
    assert DATABASE_NAME.fullmatch("crm") and not DATABASE_NAME.fullmatch("crm\n")


def test_a_ciphertext_with_a_trailing_newline_is_not_one() -> None:
    box = SecretBox.from_secret(generate_secret())
    token = box.encrypt("hunter2", context="t")
    assert box.can_decrypt(token, context="t")
    assert not box.can_decrypt(token + "\n", context="t")


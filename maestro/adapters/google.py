"""Google Cloud clients: BigQuery and Cloud Storage against Google, and URL signing locally."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from google.api_core.client_options import ClientOptions
from google.api_core.exceptions import Conflict
from google.cloud import bigquery, storage
from google.oauth2 import service_account


def clients_from_info(
    info: dict[str, Any], project: str, location: str | None, *,
    bigquery_endpoint: str | None = None, storage_endpoint: str | None = None,
) -> tuple[Any, Any, Any]:
    """(BigQuery client, Storage client, signing credentials) from a service account's JSON key;
    the endpoints, when given, replace Google's (a private endpoint; the tests' local servers)."""
    creds = service_account.Credentials.from_service_account_info(info)
    return (
        bigquery.Client(project=project, credentials=creds, location=location,
                        client_options=ClientOptions(api_endpoint=bigquery_endpoint) if bigquery_endpoint else None),
        storage.Client(project=project, credentials=creds,
                       client_options=ClientOptions(api_endpoint=storage_endpoint) if storage_endpoint else None),
        creds,
    )


def clients(project: str, credentials_file: Path | None, location: str | None) -> tuple[Any, Any, Any]:
    """(BigQuery client, Storage client, signing credentials) for a real project.

    Without a credentials file, application default credentials are used; signing extract URLs
    then needs credentials that can sign (a service-account key, or IAM signBlob rights).
    """
    creds = (
        service_account.Credentials.from_service_account_file(str(credentials_file))
        if credentials_file is not None
        else None
    )
    bq = bigquery.Client(project=project, credentials=creds, location=location)
    gcs = storage.Client(project=project, credentials=creds)
    return bq, gcs, creds


def local_signer(data_dir: Path, project: str) -> Any:
    """A service-account key of our own for signing extract URLs on the local stack (fake-gcs-server
    does not check signatures, but the URL is built exactly as against Google)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = data_dir / "local-signing-key.json"
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        info = {
            "type": "service_account", "project_id": project, "private_key_id": "local",
            "private_key": pem, "client_email": f"maestro@{project}.iam.gserviceaccount.com",
            "client_id": "0", "token_uri": "https://oauth2.googleapis.com/token",
        }
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(info))
        path.chmod(0o600)
    return service_account.Credentials.from_service_account_info(json.loads(path.read_text()))


def ensure_bucket(client: Any, name: str) -> None:
    with contextlib.suppress(Conflict):
        client.create_bucket(name)

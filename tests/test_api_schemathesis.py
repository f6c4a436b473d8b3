"""Schemathesis against the live API: no server errors, nothing the schema does not say."""

import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from reports.models import Report
from runs.services.queue import enqueue_run
from runs.services.runner import run_report_now
from tests.api_helpers import client_for, make_user

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def schemathesis(schema, tmp_path, *headers, max_examples, phases, base_url=None):
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        schema,
        *(["--url", base_url] if base_url else []),
        "--checks",
        CHECKS,
        "--max-examples",
        str(max_examples),
        "--seed",
        "20261126",
        "--request-timeout",
        "10",
        "--phases",
        phases,
        *[part for header in headers for part in ("-H", header)],
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)


@pytest.fixture
def api_data():
    report = Report.objects.create(name="Numbers", slug="numbers", sql="SELECT 1 AS n")
    run_report_now(report)
    enqueue_run(report, "api")
    superuser = make_user("root", staff=True)
    superuser.is_superuser = True
    superuser.save()
    client_for(superuser)  # creates the token
    return superuser.auth_token.key


def test_with_a_token_every_response_matches_the_schema(live_server, tmp_path, api_data):
    # The schema itself needs the token too, like everything under /api/.
    result = schemathesis(
        f"{live_server.url}/api/schema/",
        tmp_path,
        f"Authorization: Token {api_data}",
        max_examples=8,
        phases="examples,coverage,fuzzing,stateful",
    )
    assert result.returncode == 0, result.stdout[-6000:]
    assert "12 passed" in result.stdout


def test_without_a_token_every_response_matches_the_schema(live_server, tmp_path, api_data):
    # Every answer is a 401; the schema must say so for every operation. The schema is
    # fetched with the token (anonymous requests for it get a 401 as well).
    schema = tmp_path / "schema.json"
    response = APIClient().get(
        "/api/schema/",
        HTTP_ACCEPT="application/vnd.oai.openapi+json",
        HTTP_AUTHORIZATION=f"Token {api_data}",
    )
    assert response.status_code == 200
    schema.write_bytes(response.content)
    assert APIClient().get("/api/schema/").status_code == 401
    result = schemathesis(
        str(schema), tmp_path, max_examples=4, phases="fuzzing", base_url=live_server.url
    )
    assert result.returncode == 0, result.stdout[-6000:]
    assert "12 passed" in result.stdout

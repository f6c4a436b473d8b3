"""Schemathesis against the live API: no server errors, nothing the schema does not say."""

import subprocess
import sys
from pathlib import Path

import pytest

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


def schemathesis(live_server, tmp_path, *headers, max_examples, phases):
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"{live_server.url}/api/schema/",
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
    result = schemathesis(
        live_server,
        tmp_path,
        f"Authorization: Token {api_data}",
        max_examples=8,
        phases="examples,coverage,fuzzing,stateful",
    )
    assert result.returncode == 0, result.stdout[-6000:]
    assert "12 passed" in result.stdout


def test_without_a_token_every_response_matches_the_schema(live_server, tmp_path, api_data):
    # Every answer is a 401; the schema must say so for every operation.
    result = schemathesis(live_server, tmp_path, max_examples=4, phases="fuzzing")
    assert result.returncode == 0, result.stdout[-6000:]
    assert "12 passed" in result.stdout
